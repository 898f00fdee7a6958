"""Cortex-M and Ethos-U firmware artifacts on the real MLPerf Tiny and TFLite Micro example models.

Each MLPerf model is exported once per module (fixtures); the tests read what the export wrote:
C sources compiled with the host compilers, the op resolver checked against the model and
TFLite Micro's method list, the arena against TFLite Micro's measured need, the latency estimate
against the MLPerf Tiny device results, and Vela's figures for the Ethos-U target.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from cli_helpers import run_cli
from test_mlperf_export import AD_FLOAT_SCORE, ad_windows, anomaly_score

from exporter.benchmark import measure_arena
from exporter.devices.cortex_m.csource import read_resolver_methods
from exporter.devices.cortex_m.dense_quant import Candidate, decide
from exporter.errors import ProfileError
from exporter.profiles import load_profile
from exporter.verify.graph import TFLiteGraph

AD_REFERENCE_BYTES = 276_976
AD_REFERENCE_SCORE = 10.2652
VWW_DEVICE_MS = 600.6  # MLPerf Tiny reference, STM32L4R5 Cortex-M4 @ 120 MHz (assets README)
AD_DEVICE_MS = 10.05
FIRMWARE_FILES = ("model_data.h", "model_data.cc", "model_ops.h", "model_settings.h", "model.mk")
needs_gcc = pytest.mark.skipif(shutil.which("g++") is None or shutil.which("gcc") is None, reason="no host gcc/g++")


def _export(*args) -> None:
    from exporter.cli import main

    code = main([str(a) for a in args] + ["--quiet"])
    assert code == 0, code


@pytest.fixture(scope="module")
def vww(assets, tmp_path_factory):
    images = tmp_path_factory.mktemp("vww_calib")
    for name in ("cat.bmp", "grace_hopper.bmp"):
        shutil.copy(assets / "images" / name, images / name)
    out = tmp_path_factory.mktemp("vww_fw")
    model = assets / "models/mlperf_tiny/visual_wake_words/vww_96.h5"
    _export("export", model, "--target", "cortex-m4", "--calib", images, "--input-range", "0,1", "-o", out)
    return out


@pytest.fixture(scope="module")
def ad(assets, tmp_path_factory):
    """AD for cortex-m4 and the Ethos-U target, per-tensor Dense forced (what auto takes too: test_ad_auto_rule_takes_per_tensor)."""
    work = tmp_path_factory.mktemp("ad_fw")
    np.save(work / "windows.npy", ad_windows(assets))
    model = assets / "models/mlperf_tiny/anomaly_detection/ad01.h5"
    _export(
        "export", model, "--target", "cortex-m4,cortex-m55-ethos-u55", "--calib", work / "windows.npy",
        "--dense-quant", "per-tensor", "-o", work / "out",
    )  # fmt: skip
    return work / "out"


def _report(directory) -> dict:
    return json.loads((directory / "report.json").read_text())


def _define(header: str, name: str) -> str:
    match = re.search(rf"^#define {name} (.+)$", header, re.M)
    assert match, f"{name} not defined"
    return match.group(1).strip()


def _compile(tmp_path, directory) -> None:
    cc = directory / "model_data.cc"
    cxx = ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", cc, "-o", tmp_path / "data_cxx.o"]
    subprocess.run([str(a) for a in cxx], check=True, capture_output=True, text=True)
    as_c = ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-x", "c", "-c", cc, "-o", tmp_path / "data_c.o"]
    subprocess.run([str(a) for a in as_c], check=True, capture_output=True, text=True)
    user = tmp_path / "user.c"
    user.write_text(
        '#include <stdint.h>\n#include "model_data.h"\n#include "model_settings.h"\n'
        "static unsigned char arena[MODEL_ARENA_SIZE];\n"
        "int model_ok(void) {\n  const int dims[] = MODEL_INPUT0_DIMS;\n  MODEL_INPUT0_CTYPE q = 0;\n"
        "  (void)arena; (void)q;\n  return g_model_len > 8 && dims[0] == 1 && MODEL_INPUT0_SCALE > 0.0f;\n}\n"
    )
    c = ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", directory, "-c", user, "-o", tmp_path / "user.o"]
    subprocess.run([str(a) for a in c], check=True, capture_output=True, text=True)


@needs_gcc
@pytest.mark.parametrize("which", ["vww", "ad"])
def test_model_data_compiles_as_cxx_and_c(which, request, tmp_path):
    out = request.getfixturevalue(which)
    directory = out / "cortex-m4" if which == "ad" else out
    for name in FIRMWARE_FILES:
        assert (directory / name).is_file(), name
    _compile(tmp_path, directory)
    model = (directory / "model_int8.tflite").read_bytes()
    text = (directory / "model_data.cc").read_text()
    assert f"const unsigned int g_model_len = {len(model)}u;" in text
    values = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", text.split("= {", 1)[1]))
    assert values == model


@pytest.mark.parametrize("which", ["vww", "ad"])
def test_op_resolver_registers_exactly_the_models_ops(which, request):
    out = request.getfixturevalue(which)
    directory = out / "cortex-m4" if which == "ad" else out
    header = (directory / "model_ops.h").read_text()
    methods = re.findall(r"resolver\.(Add\w+)\(\)", header)
    by_method = {method: op for op, (_, method) in read_resolver_methods().items()}
    assert all(m in by_method for m in methods), methods  # every method is in tflm_ops.txt, column 3
    graph = TFLiteGraph.from_file(directory / "model_int8.tflite")
    assert [by_method[m] for m in methods] == list(graph.op_counts())
    assert len(set(methods)) == len(methods)
    assert _define(header, "MODEL_OP_COUNT") == str(len(methods))
    assert "tflite::MicroMutableOpResolver<MODEL_OP_COUNT>" in header


@pytest.mark.parametrize("which", ["vww", "ad"])
def test_arena_size_covers_tflite_micro_with_a_bounded_margin(which, request):
    out = request.getfixturevalue(which)
    directory = out / "cortex-m4" if which == "ad" else out
    settings = (directory / "model_settings.h").read_text()
    arena = int(_define(settings, "MODEL_ARENA_SIZE"))
    needed = measure_arena(directory / "model_int8.tflite").bytes
    assert needed <= arena <= 1.15 * needed, (needed, arena)
    assert arena % 16 == 0
    graph = TFLiteGraph.from_file(directory / "model_int8.tflite")
    tensor = graph.input_tensors[0]
    assert float(_define(settings, "MODEL_INPUT0_SCALE").rstrip("f")) == pytest.approx(tensor.scale[0], rel=1e-6)
    assert _define(settings, "MODEL_INPUT0_ZERO_POINT") == f"({tensor.zero_point[0]})"
    assert _define(settings, "MODEL_INPUT0_DIMS") == "{" + ", ".join(str(d) for d in tensor.shape) + "}"


@pytest.mark.parametrize(
    ("which", "device_ms", "op"), [("vww", VWW_DEVICE_MS, "CONV_2D"), ("ad", AD_DEVICE_MS, "FULLY_CONNECTED")]
)
def test_latency_estimate_within_25_percent_of_the_device(which, device_ms, op, request):
    out = request.getfixturevalue(which)
    report = _report(out / "cortex-m4" if which == "ad" else out)
    latency = report["cortex_m"]["latency"]
    assert abs(latency["estimated_ms"] - device_ms) / device_ms < 0.25, latency["estimated_ms"]
    assert latency["method"].startswith("estimate")
    assert "MLPerf Tiny" in latency["basis"] and "by construction" in latency["basis"]
    rows = [r for r in latency["layers"] if r["op"] == op]
    assert rows and all(r["unit"] == "MACs" and r["work"] > 0 for r in rows)
    assert latency["macs"] == sum(r["work"] for r in latency["layers"] if r["unit"] == "MACs")


def test_vww_macs_match_velas_count(vww, ad):
    """Our MAC count and Vela's agree on AD (Vela counts the same FULLY_CONNECTED products)."""
    m4 = _report(ad / "cortex-m4")["cortex_m"]["latency"]
    ethos = _report(ad / "cortex-m55-ethos-u55")["cortex_m"]["vela"]
    assert m4["macs"] == ethos["macs"] == 264_192


def test_ad_per_tensor_is_smaller_than_reference_and_closer_to_float(assets, ad):
    from exporter.analyze.inference import run_tflite

    model = (ad / "cortex-m4" / "model_int8.tflite").read_bytes()
    assert len(model) <= AD_REFERENCE_BYTES
    windows = ad_windows(assets)
    score = anomaly_score(windows, run_tflite(model, [windows])[0])
    assert abs(score - AD_FLOAT_SCORE) < abs(AD_REFERENCE_SCORE - AD_FLOAT_SCORE), score


def test_ad_auto_rule_takes_per_tensor(ad):
    """Per-tensor AD is 9.8 dB lower in SNR but above the 30 dB floor, with a 79% smaller arena: auto takes
    it (see docs/firmware.md; tests/test_dense_quant_ram.py checks the rule itself)."""
    choice = _report(ad / "cortex-m4")["dense_quantization"]
    assert choice["chosen"] == "per-tensor" and choice["mode"] == "per-tensor"
    assert choice["auto_would_choose"] == "per-tensor"
    pc, pt = choice["candidates"]
    assert pc["scheme"] == "per-channel" and pt["scheme"] == "per-tensor"
    assert pc["fidelity"][0]["snr_db"] - pt["fidelity"][0]["snr_db"] > 1.0
    assert choice["bytes_saved_by_per_tensor"] == pc["model_bytes"] - pt["model_bytes"] > 30_000


def test_vww_auto_does_not_convert_twice_for_a_few_bytes(vww):
    """VWW's only Dense is 256->2: per-tensor would save about 48 B, not worth a second conversion."""
    choice = _report(vww)["dense_quantization"]
    assert choice["mode"] == "auto" and choice["chosen"] == "per-channel"
    assert "not converted" in choice["reason"] and len(choice["candidates"]) == 1
    graph = TFLiteGraph.from_file(vww / "model_int8.tflite")
    fc = next(op for op in graph.ops if op.name == "FULLY_CONNECTED")
    assert len(graph.op_inputs(fc)[1].scale) == 2  # per-channel kept


def test_rule_refuses_a_lower_top1_agreement():
    pc = Candidate("per-channel", 100, {"outputs": [{"name": "y", "top1_agreement": 0.99, "snr_db": 30.0}]})
    pt = Candidate("per-tensor", 90, {"outputs": [{"name": "y", "top1_agreement": 0.98, "snr_db": 30.5}]})
    assert decide("auto", pc, pt).chosen == "per-channel"
    within = Candidate("per-tensor", 90, {"outputs": [{"name": "y", "top1_agreement": 0.99, "snr_db": 29.2}]})
    assert decide("auto", pc, within).chosen == "per-tensor"
    assert decide("per-channel", pc, within).chosen == "per-channel"


def test_vela_figures_in_report(ad):
    directory = ad / "cortex-m55-ethos-u55"
    report = _report(directory)
    assert report["verdict"] == "ok", report["reasons"]
    vela = report["cortex_m"]["vela"]
    assert vela["npu_ops"] == 10 and vela["cpu_ops"] == 0
    assert vela["sram_bytes"] > 0 and vela["off_chip_flash_bytes"] > 200_000
    assert vela["cycles_npu"] > 0 and 0 < vela["inference_ms"] < AD_DEVICE_MS
    assert vela["vela_version"] == "5.2.0" and vela["accelerator"] == "ethos-u55-128"
    vela_model = (directory / "model_vela.tflite").read_bytes()
    assert vela["vela_model_bytes"] == len(vela_model)
    assert f"g_model_len = {len(vela_model)}u" in (directory / "model_data.cc").read_text()
    assert re.findall(r"resolver\.(Add\w+)\(\)", (directory / "model_ops.h").read_text()) == ["AddEthosU"]
    assert report["cortex_m"]["latency"]["method"].startswith("estimate: NPU part")


def test_float_model_refused_for_ethos_u(assets, tmp_path, capsys):
    model = assets / "models/tflm/hello_world/hello_world_float.tflite"
    run = run_cli(capsys, "export", model, "--target", "cortex-m55-ethos-u55", "-o", tmp_path, "--quiet")
    assert run.code == 3
    assert "needs an int8 model: this model is float-only" in run.err
    assert not (tmp_path / "model_int8.tflite").exists() and not (tmp_path / "model_data.cc").exists()


@pytest.mark.parametrize(
    ("path", "upstream"),
    [("hello_world/hello_world_int8.tflite", 3_000), ("micro_speech/micro_speech_quantized.tflite", 28_584)],
)
def test_tflm_example_arena_no_larger_than_upstream(assets, tmp_path, capsys, path, upstream):
    run = run_cli(capsys, "export", assets / "models/tflm" / path, "--target", "cortex-m4", "-o", tmp_path, "--quiet")
    assert run.code == 0, run.err
    arena = _report(tmp_path)["cortex_m"]["arena"]
    assert arena["measured_bytes"] <= arena["bytes"] <= upstream


def test_rerun_keeps_files_and_depfile_lists_inputs(assets, tmp_path, capsys):
    model = assets / "models/tflm/hello_world/hello_world_int8.tflite"
    args = ("export", model, "--target", "cortex-m4", "-o", tmp_path / "fw", "--depfile", tmp_path / "fw.d", "--quiet")
    assert run_cli(capsys, *args).code == 0
    first = {n: ((tmp_path / "fw" / n).read_bytes(), (tmp_path / "fw" / n).stat().st_mtime_ns) for n in FIRMWARE_FILES}
    assert run_cli(capsys, *args).code == 0
    for name, (data, mtime) in first.items():
        assert (tmp_path / "fw" / name).read_bytes() == data, name
        if name != "model.mk":  # the rule's target: refreshed so make sees it up to date
            assert (tmp_path / "fw" / name).stat().st_mtime_ns == mtime, name
    depfile = (tmp_path / "fw.d").read_text()
    assert depfile.startswith(f"{tmp_path / 'fw' / 'model.mk'}: \\\n")
    assert str(model) in depfile and "cortex-m4.toml" in depfile and "_cortex-m.toml" in depfile


def test_c_name_renames_array_and_macros(assets, tmp_path, capsys):
    model = assets / "models/tflm/hello_world/hello_world_int8.tflite"
    run = run_cli(capsys, "export", model, "--target", "cortex-m4", "-o", tmp_path, "--c-name", "g_sine", "--quiet")
    assert run.code == 0, run.err
    assert "const unsigned char g_sine[]" in (tmp_path / "model_data.h").read_text()
    assert "#define SINE_ARENA_SIZE " in (tmp_path / "model_settings.h").read_text()
    assert "RegisterSineOps(SineOpResolver& resolver)" in (tmp_path / "model_ops.h").read_text()
    bad = run_cli(capsys, "export", model, "--target", "cortex-m4", "-o", tmp_path / "x", "--c-name", "int")
    assert bad.code == 2 and "--c-name must be a C identifier" in bad.err


def test_over_budget_is_exit_3_with_biggest_consumers(assets, tmp_path, capsys):
    model = assets / "models/tflm/micro_speech/micro_speech_quantized.tflite"
    args = ("export", model, "--target", "cortex-m4", "-o", tmp_path, "--flash-budget", "30K", "--ram-budget", "4K")
    run = run_cli(capsys, *args, "--quiet")
    assert run.code == 3
    report = _report(tmp_path)
    flash, ram = (next(f for f in report["fit"] if f["resource"] == r) for r in ("flash", "ram"))
    assert flash["budget_bytes"] == 30 * 1024 and not flash["fits"]
    assert flash["needed_bytes"] == 18_800 + report["cortex_m"]["kernel_code"]["total_bytes"]
    assert (
        not ram["fits"] and ram["needed_bytes"] == report["cortex_m"]["arena"]["bytes"] + report["cortex_m"]["io_bytes"]
    )
    assert any("flash needs" in r and "Biggest consumers" in r and "kernel code" in r for r in report["reasons"])
    assert any("ram needs" in r and "largest activations" in r for r in report["reasons"])
    assert all("To fit (" in r for r in report["reasons"])  # each says what to change
    assert any("--prune channels" in r and "--flash-budget" in r for r in report["reasons"])
    assert any("smaller input resolution" in r and "--ram-budget" in r for r in report["reasons"])
    assert not (tmp_path / "model_int8.tflite").exists()


def test_over_ram_budget_names_the_keras_layer_behind_the_largest_activation(
    tiny_keras_path, tiny_calib_path, tmp_path, capsys
):
    args = ("export", tiny_keras_path, "-t", "cortex-m4", "--calib", tiny_calib_path, "-o", tmp_path)
    run = run_cli(capsys, *args, "--ram-budget", "1K", "--quiet")
    assert run.code == 3
    ram = next(r for r in _report(tmp_path)["reasons"] if r.startswith("ram needs"))
    assert "output of layer 'conv'" in ram and "To fit (" in ram, ram


def test_latency_table_is_validated(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'inherit = "cortex-m4"\nname = "bad"\ntitle = "t"\ndescription = "d"\n'
        "[latency]\nbasis = 'x'\ncycles_per_mac = { CONV_2D = -1.0 }\n"
    )
    with pytest.raises(ProfileError, match=r"latency.cycles_per_mac.CONV_2D' must be a positive number"):
        load_profile(bad)
    bad.write_text(
        'inherit = "cortex-m4"\nname = "bad"\ntitle = "t"\ndescription = "d"\n'
        "[latency]\nbasis = 'x'\ncycles_per_mac = { conv = 1.0 }\n"
    )
    with pytest.raises(ProfileError, match=r"must be a TFLite op name in capitals"):
        load_profile(bad)
    assert (
        load_profile("cortex-m7").latency.cycles_per_mac["CONV_2D"]
        < load_profile("cortex-m4").latency.cycles_per_mac["CONV_2D"]
    )
