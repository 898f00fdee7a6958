"""--dense-quant weighs TFLite Micro's arena, the flash file and fidelity (exporter.devices.cortex_m.dense_quant).

Every check compares the choice with the measured candidates, restating the documented rule here
(docs/firmware.md) rather than trusting the module: each candidate's arena and file are what the forced
export of that candidate writes and measures, and the scheme chosen is the one the rule names.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import quiet_keras, run_cli

import exporter
from exporter.devices.cortex_m.arena import with_margin
from exporter.devices.cortex_m.dense_quant import Budgets, Candidate, decide
from exporter.verify.graph import TFLiteGraph

pytestmark = pytest.mark.filterwarnings("ignore")

AD_REFERENCE_SCORE = 10.2652  # MLPerf ad01_int8.tflite on the shipped sample (+8.2 % above float)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A Dense autoencoder (64->128->64, trained a few epochs): per-tensor Dense is worth trying on an MCU."""
    keras = quiet_keras()
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = (rng.random((400, 8)) @ rng.normal(size=(8, 64))).astype(np.float32)  # low-rank: learnable
    model = keras.Sequential(
        [keras.Input((64,), name="x"), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(64)]
    )
    model.compile("adam", "mse")
    model.fit(x, x, epochs=3, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("mlp")
    model.save(folder / "mlp.keras")
    np.save(folder / "calib.npy", x[:64])
    return folder / "mlp.keras", folder / "calib.npy"


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """One hidden unit with a weight 100x the others on an input that is always 0: per-channel Dense
    quantizes every other unit finely, per-tensor rounds them all away (the rule must keep per-channel)."""
    keras = quiet_keras()
    keras.utils.set_random_seed(6)
    rng = np.random.default_rng(6)
    model = keras.Sequential(
        [keras.Input((32,), name="x"), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32)]
    )
    w1, b1 = model.layers[0].get_weights()
    w1 = rng.normal(0, 0.3, w1.shape).astype(np.float32)
    w1[0, 0] = 100.0
    model.layers[0].set_weights([w1, np.full_like(b1, 0.1)])
    folder = tmp_path_factory.mktemp("skewed")
    model.save(folder / "skewed.keras")
    x = rng.uniform(-1, 1, (64, 32)).astype(np.float32)
    x[:, 0] = 0.0
    np.save(folder / "calib.npy", x)
    return folder / "skewed.keras", folder / "calib.npy"


def _export(model, calib, out, **options) -> dict:
    result = exporter.export(
        model, target="cortex-m4", calib=str(calib), output_dir=out, formats=("tflite",), **options
    )
    assert result.report("cortex-m4").verdict == "ok"
    return json.loads((out / "report.json").read_text())


def _rule(choice: dict) -> tuple[str, str]:
    """The documented rule, restated on the report's numbers: (scheme, which step decided)."""
    pc, pt = choice["candidates"]
    budgets = choice["budgets"]

    def misses(c: dict) -> bool:
        flash = c["file_bytes"] + budgets["kernel_code_bytes"]
        ram = with_margin(c["arena_bytes"], "", budgets["arena_margin"]).bytes + budgets["io_bytes"]
        return flash > (budgets["flash_budget_bytes"] or flash) or ram > (budgets["ram_budget_bytes"] or ram)

    if misses(pc) != misses(pt):
        return ("per-tensor" if misses(pc) else "per-channel"), "budget"
    if pt["file_bytes"] + pt["arena_bytes"] >= pc["file_bytes"] + pc["arena_bytes"]:
        return "per-channel", "not smaller"
    material = pt["arena_bytes"] <= 0.9 * pc["arena_bytes"] or pt["file_bytes"] <= 0.9 * pc["file_bytes"]
    for a, b in zip(pc["fidelity"], pt["fidelity"], strict=True):
        if a["top1_agreement"] is not None and b["top1_agreement"] < a["top1_agreement"]:
            return "per-channel", "fidelity"
        sa, sb = (np.inf if s is None else s for s in (a["snr_db"], b["snr_db"]))
        if not (sb >= sa - 1.0 or (material and sb >= 30.0)):
            return "per-channel", "fidelity"
    return "per-tensor", "fidelity"


def _fc_scales(model: bytes) -> list[int]:
    graph = TFLiteGraph.from_bytes(model)
    return [len(graph.op_inputs(op)[1].scale) for op in graph.ops if op.name == "FULLY_CONNECTED"]


def test_auto_follows_the_rule_and_each_candidate_is_what_forcing_it_writes(mlp, tmp_path, capsys):
    model, calib = mlp
    auto = _export(model, calib, tmp_path / "auto")
    choice = auto["dense_quantization"]
    assert choice["mode"] == "auto"
    assert choice["chosen"] == choice["auto_would_choose"] == _rule(choice)[0], choice["reason"]
    written = (tmp_path / "auto" / "model_int8.tflite").read_bytes()
    chosen = {c["scheme"]: c for c in choice["candidates"]}[choice["chosen"]]
    assert chosen["file_bytes"] == len(written)
    assert chosen["arena_bytes"] == auto["cortex_m"]["arena"]["measured_bytes"]
    for mode in ("per-channel", "per-tensor"):  # forcing works, and reports the same measured candidates
        out = tmp_path / mode
        run = run_cli(capsys, "export", model, "--target", "cortex-m4", "--calib", calib, "--dense-quant", mode,
                      "--format", "tflite", "-o", out, "--quiet")  # fmt: skip
        assert run.code == 0, run.err
        forced = json.loads((out / "report.json").read_text())
        assert forced["dense_quantization"]["chosen"] == mode
        assert forced["dense_quantization"]["auto_would_choose"] == choice["chosen"]
        model_bytes = (out / "model_int8.tflite").read_bytes()
        assert (max(_fc_scales(model_bytes)) > 1) == (mode == "per-channel")
        candidate = {c["scheme"]: c for c in choice["candidates"]}[mode]
        assert candidate["file_bytes"] == len(model_bytes)
        assert candidate["arena_bytes"] == forced["cortex_m"]["arena"]["measured_bytes"]
    summary = choice["summary"]
    for c in choice["candidates"]:
        assert f"{c['scheme']}: arena {c['arena_bytes']:,} B, file {c['file_bytes']:,} B, SNR" in summary
    assert f"- Dense layers: {summary}" in (tmp_path / "auto" / "report.md").read_text()
    html = (tmp_path / "auto" / "report.html").read_text()
    assert f"arena {chosen['arena_bytes']:,} B" in html and "Dense layers: " in html


def test_fidelity_keeps_per_channel_and_a_ram_budget_between_them_forces_per_tensor(skewed, tmp_path):
    model, calib = skewed
    free = _export(model, calib, tmp_path / "free")["dense_quantization"]
    assert _rule(free) == ("per-channel", "fidelity") and free["chosen"] == "per-channel", free["reason"]
    assert "fidelity loss" in free["reason"]
    pc, pt = free["candidates"]
    assert pt["arena_bytes"] < pc["arena_bytes"], "per-channel kernels keep a multiplier and shift per channel"
    budgets = Budgets(None, None, 0, free["budgets"]["io_bytes"], free["budgets"]["arena_margin"])
    need = [budgets.ram_needed(Candidate(c["scheme"], 0, None, 0, c["arena_bytes"])) for c in (pc, pt)]
    between = (need[0] + need[1]) // 2
    report = _export(model, calib, tmp_path / "tight", ram_budget=between)
    tight = report["dense_quantization"]
    assert _rule(tight) == ("per-tensor", "budget") and tight["chosen"] == "per-tensor"
    assert f"RAM {need[0]:,} B over the {between:,} B budget" in tight["reason"], tight["reason"]
    assert report["verdict"] == "ok", report["reasons"]
    ram = next(f for f in report["fit"] if f["resource"] == "ram")
    assert ram["needed_bytes"] == need[1] <= between, "the fit check counts what the rule counted"


def _c(scheme: str, file: int, arena: int | None, snr: float | None, top1: float | None = None) -> Candidate:
    return Candidate(scheme, file, {"outputs": [{"name": "y", "snr_db": snr, "top1_agreement": top1}]}, file, arena)


@pytest.mark.parametrize(
    ("pt", "budgets", "chosen", "why"),
    [
        (_c("per-tensor", 9_000, 1_000, 39.5), None, "per-tensor", "no measurable loss"),  # within 1 dB
        (_c("per-tensor", 9_000, 1_000, 31.0), None, "per-tensor", "at least 30 dB"),  # arena 50% smaller
        (_c("per-tensor", 9_000, 1_000, 29.0), None, "per-channel", "below the 30 dB floor"),
        (_c("per-tensor", 9_950, 1_990, 35.0), None, "per-channel", "saves less than 10%"),
        (_c("per-tensor", 9_000, 1_000, 40.0, 0.9), None, "per-channel", "top-1 agreement 90.0%"),
        (_c("per-tensor", 9_000, 1_000, 5.0), Budgets(None, 1_500, 0, 0, 0.0), "per-tensor", "forced by the budget"),
        (_c("per-tensor", 9_000, 1_000, 40.0), Budgets(None, 500, 0, 0, 0.0), "per-tensor", "neither fits"),
        (_c("per-tensor", 10_000, 2_000, 40.0), None, "per-channel", "not smaller"),
    ],
)
def test_rule_on_synthetic_candidates(pt, budgets, chosen, why):
    pc = _c("per-channel", 10_000, 2_000, 40.0, None if pt.outputs()[0]["top1_agreement"] is None else 0.95)
    choice = decide("auto", pc, pt, budgets)
    assert choice.chosen == chosen and why in choice.reason, choice.reason
    forced = decide("per-channel", pc, pt, budgets)
    assert forced.chosen == "per-channel" and forced.auto_would_choose == chosen


def test_ad_auto_meets_the_reference_arena_at_reference_fidelity(assets, tmp_path):
    """MLPerf Tiny AD (issue #16): the rule's choice needs at most 1.1x the reference int8's arena and
    scores the shipped sample no further from float than the reference does (+8.2 %)."""
    from test_mlperf_export import AD_FLOAT_SCORE, ad_windows, anomaly_score

    from exporter.analyze.inference import run_tflite

    ad = assets / "models/mlperf_tiny/anomaly_detection"
    windows = ad_windows(assets)
    np.save(tmp_path / "windows.npy", windows)
    report = _export(ad / "ad01.h5", tmp_path / "windows.npy", tmp_path / "out")
    choice = report["dense_quantization"]
    assert choice["chosen"] == _rule(choice)[0], choice["reason"]
    reference_arena = exporter.measure_arena(ad / "ad01_int8.tflite").bytes
    arena = report["cortex_m"]["arena"]["measured_bytes"]
    score = anomaly_score(windows, run_tflite((tmp_path / "out" / "model_int8.tflite").read_bytes(), [windows])[0])
    assert arena <= 1.1 * reference_arena, (arena, reference_arena, choice["summary"])
    assert abs(score - AD_FLOAT_SCORE) <= abs(AD_REFERENCE_SCORE - AD_FLOAT_SCORE), (score, choice["summary"])


def test_clustered_candidates_are_weighed_as_they_ship_lut_compressed(mlp, tmp_path, capsys):
    """With --cluster, TFLite Micro gets LUT-compressed weights and DECODE puts them in the arena: the rule
    compares each candidate's compressed file and that file's arena, and each figure is what forcing that
    candidate writes and measures."""
    model, calib = mlp
    auto = _export(model, calib, tmp_path / "auto", cluster=16)
    choice = auto["dense_quantization"]
    assert {c["form"] for c in choice["candidates"]} == {"LUT-compressed"}
    assert choice["chosen"] == _rule(choice)[0], choice["reason"]
    assert "LUT-compressed: arena" in choice["summary"]
    for mode in ("per-channel", "per-tensor"):
        out = tmp_path / mode
        forced = _export(model, calib, out, cluster=16, dense_quant=mode)
        shipped = (out / "model_int8.tflite").read_bytes()
        assert "CUSTOM:TFLM_DECODE" in TFLiteGraph.from_bytes(shipped).op_counts()
        candidate = {c["scheme"]: c for c in choice["candidates"]}[mode]
        assert candidate["file_bytes"] == len(shipped)
        assert candidate["arena_bytes"] == forced["cortex_m"]["arena"]["measured_bytes"]
