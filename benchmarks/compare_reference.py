"""edgeport's int8 exports next to the MLPerf Tiny reference models, measured side by side.

Run from the repository root (needs ../shared/assets):

    .venv/bin/python benchmarks/compare_reference.py

In one run it exports the MLPerf Tiny Visual Wake Words (vww_96.h5) and Anomaly Detection (ad01.h5)
Keras models with ``exporter.export`` and compares each with the reference int8 .tflite the MLPerf
Tiny repository ships: file size, LiteRT latency (1 thread, interleaved A/B batches, with an A/A
control to show the noise), agreement with the float Keras model, and the TFLite Micro arena. It
also times the export of a MobileNetV2 (alpha 0.35, 96x96, 10 classes, random weights). The results
go to benchmarks/results.md, written atomically.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("EDGEPORT_SHARED_ASSETS", ROOT.parent / "shared" / "assets"))
RESULTS = ROOT / "benchmarks" / "results.md"
VWW = ASSETS / "models" / "mlperf_tiny" / "visual_wake_words"
AD = ASSETS / "models" / "mlperf_tiny" / "anomaly_detection"
IMAGES = ASSETS / "images"
#: The float Keras AD model's anomaly score on the shipped sample (mean MSE over 196 windows).
AD_KERAS_SCORE_EXPECTED = 9.4913
#: Export target for both models: the MLPerf Tiny reference board is a Cortex-M4 (STM32L4R5), int8 I/O.
TARGET = "cortex-m4"
SIZE_RATIO_MAX = 1.00
LATENCY_BAND = (0.95, 1.05)


# --- interleaved latency (runs in a fresh child: no TensorFlow in the process being timed) -------


def interleave(paths: list[str], rounds: int, batch: int, seed: int = 0) -> dict[str, Any]:
    """Alternate batches of ``batch`` invokes over the models for ``rounds`` rounds (order rotating).

    Every model sees the same conditions (CPU frequency, cache, neighbours) spread over the whole run,
    so a drift of the machine cancels out of the ratio instead of landing on whichever ran second.
    """

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(seed)
    interps = []
    for path in paths:
        interp = Interpreter(model_path=path, num_threads=1)
        interp.allocate_tensors()
        for detail in interp.get_input_details():
            dtype = np.dtype(detail["dtype"])
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                data = rng.integers(info.min, int(info.max) + 1, detail["shape"], dtype=dtype)
            else:
                data = rng.random(detail["shape"]).astype(dtype)
            interp.set_tensor(detail["index"], data)
        for _ in range(50):
            interp.invoke()
        interps.append(interp)
    from _interleave import rotating_rounds  # benchmarks/ is on sys.path: this runs as a script's child

    timings, round_medians = rotating_rounds([i.invoke for i in interps], rounds, batch)
    return {
        "medians_ms": [statistics.median(t) for t in timings],
        "round_medians_ms": round_medians,
        "runs": len(timings[0]),
    }


def latency_ratio(ours: Path, reference: Path, rounds: int = 60, batch: int = 200) -> dict[str, Any]:
    """ours/reference median latency, and reference/reference-copy as the noise control, one child each."""
    code = (
        "import json,sys; sys.path.insert(0, sys.argv[1]); from compare_reference import interleave; "
        "print(json.dumps(interleave(sys.argv[2:5], int(sys.argv[5]), int(sys.argv[6]))))"
    )
    args = [str(ours), str(reference), str(reference)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), *args, str(rounds), str(batch)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    data = json.loads(out.stdout.strip().splitlines()[-1])
    ours_ms, ref_ms, ref2_ms = data["medians_ms"]
    per_round = [a / b for a, b in zip(data["round_medians_ms"][0], data["round_medians_ms"][1], strict=True)]
    control_round = [a / b for a, b in zip(data["round_medians_ms"][2], data["round_medians_ms"][1], strict=True)]
    q = statistics.quantiles(per_round, n=4)
    qc = statistics.quantiles(control_round, n=4)
    return {
        "ours_ms": ours_ms,
        "reference_ms": ref_ms,
        "ratio": ours_ms / ref_ms,
        "control_ratio": ref2_ms / ref_ms,
        "round_ratio_iqr": (q[0], q[2]),
        "control_round_iqr": (qc[0], qc[2]),
        "runs_each": data["runs"],
        "rounds": rounds,
        "batch": batch,
    }


# --- the comparisons ----------------------------------------------------------------------------


def graph_facts(path: Path) -> dict[str, Any]:
    from exporter.verify.graph import TFLiteGraph

    graph = TFLiteGraph.from_file(path)
    weights = sum(t.nbytes for t in graph.tensors if t.is_constant)
    per_channel = sum(1 for t in graph.tensors if t.is_constant and len(t.scale) > 1)
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    metadata = sorted((m.name or b"").decode() for m in (model.metadata or []))
    return {
        "name_bytes": sum(len(t.name) for t in graph.tensors),
        "metadata": metadata,
        "signature_defs": len(model.signatureDefs or []),
        "bytes": graph.size_bytes,
        "ops": graph.op_counts(),
        "constant_bytes": weights,
        "per_channel_tensors": per_channel,
    }


def export_model(model: Path, workdir: Path, calib: str, **options: Any) -> tuple[Path, float]:
    """Export ``model`` for TARGET; a verdict other than ok is raised as :class:`StepNotSupported`."""
    import exporter

    out = workdir / model.stem
    t0 = time.perf_counter()
    result = exporter.export(model, target=TARGET, calib=calib, output_dir=out, **options)
    seconds = time.perf_counter() - t0
    path = out / "model_int8.tflite"
    report = result.reports[0]
    if not path.is_file():
        print(result.summary(), file=sys.stderr)
        raise StepNotSupported(model.name, report.verdict, report.reasons, seconds)
    return path, seconds


class StepNotSupported(Exception):
    """An export that wrote no model (its verdict and reasons go into the results, not a traceback)."""

    def __init__(self, model: str, verdict: str, reasons: list[str], seconds: float) -> None:
        self.model, self.verdict, self.reasons, self.seconds = model, verdict, list(reasons), seconds
        super().__init__(f"{model}: {verdict} on {TARGET}: {' '.join(reasons) or 'no reason given'}")


def compare_vww(workdir: Path) -> dict[str, Any]:
    import numpy as np

    from exporter.analyze.inference import run_tflite
    from exporter.calibrate import load_calibration
    from exporter.load import load_model

    ours, seconds = export_model(VWW / "vww_96.h5", workdir, calib=str(IMAGES), input_range="0,1")
    reference = VWW / "vww_96_int8.tflite"
    source = load_model(VWW / "vww_96.h5")
    photos = load_calibration(str(IMAGES), source.inputs, input_range="0,1").arrays[0]
    keras_top = np.argmax(source.keras_model.predict(photos, verbose=0), axis=-1)
    ours_top = np.argmax(run_tflite(ours.read_bytes(), [photos])[0], axis=-1)
    ref_top = np.argmax(run_tflite(reference.read_bytes(), [photos])[0], axis=-1)
    return {
        "name": "Visual Wake Words (vww_96, MobileNetV1 0.25, 96x96x3)",
        "export_s": seconds,
        "ours": ours,
        "reference": reference,
        "quality": {
            "what": f"top-1 agreement with the float Keras model on the {len(photos)} calibration photos",
            "keras_top1": keras_top.tolist(),
            "ours": float(np.mean(ours_top == keras_top)),
            "reference": float(np.mean(ref_top == keras_top)),
            "ours_top1": ours_top.tolist(),
            "reference_top1": ref_top.tolist(),
        },
    }


def ad_windows() -> Any:
    import numpy as np

    frames = np.fromfile(AD / "normal_id_01_00000000_hist_librosa.bin", dtype=np.float32).reshape(200, 128)
    return np.stack([frames[t : t + 5].reshape(640) for t in range(196)])


def anomaly_score(inputs: Any, outputs: Any) -> float:
    import numpy as np

    return float(np.mean(np.mean((inputs - outputs) ** 2, axis=1)))


def compare_ad(workdir: Path, *, per_tensor: bool = False) -> dict[str, Any]:
    import numpy as np

    from exporter.analyze.inference import run_tflite
    from exporter.load import load_model

    windows = ad_windows()
    calib = workdir / "ad_windows.npy"
    np.save(calib, windows)
    options = {"per_channel": False} if per_tensor else {}
    folder = workdir / ("per_tensor" if per_tensor else "default")
    ours, seconds = export_model(AD / "ad01.h5", folder, calib=str(calib), **options)
    reference = AD / "ad01_int8.tflite"
    source = load_model(AD / "ad01.h5")
    keras_score = anomaly_score(windows, source.keras_model.predict(windows, verbose=0))
    ours_score = anomaly_score(windows, run_tflite(ours.read_bytes(), [windows])[0])
    ref_score = anomaly_score(windows, run_tflite(reference.read_bytes(), [windows])[0])
    return {
        "name": "Anomaly Detection (ad01, FC autoencoder 640->640)"
        + (", exported with --per-tensor" if per_tensor else ""),
        "per_tensor": per_tensor,
        "export_s": seconds,
        "ours": ours,
        "reference": reference,
        "quality": {
            "what": "anomaly score (mean over the 196 five-frame windows of MSE(input, output)) of the shipped sample",
            "keras": keras_score,
            "ours": ours_score,
            "reference": ref_score,
        },
    }


def mobilenet_v2(workdir: Path) -> dict[str, Any]:
    """Export a random-weight MobileNetV2 made non-degenerate as the model zoo does (scripts/zoo_models.py).

    Raw random weights with synthetic calibration collapse the logits' range (softmax input scale
    7.8e-09) and TFLite Micro's int8 softmax aborts, so that model is "not supported" on a Cortex-M:
    a result about random weights, not about MobileNetV2 or the export.
    """
    import numpy as np

    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    sys.path.insert(0, str(ROOT / "scripts"))
    from zoo_models import make_realistic

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    rng = np.random.default_rng(0)
    done = make_realistic(model, {"image": rng.uniform(-1, 1, (64, 96, 96, 3)).astype("float32")}, keras)
    path = workdir / "mobilenetv2_035_96.keras"
    model.save(path)
    calib = workdir / "mobilenetv2_calib.npy"
    np.save(calib, rng.uniform(-1, 1, (200, 96, 96, 3)).astype("float32"))
    entry: dict[str, Any] = {"params": int(model.count_params()), "realistic": done}
    try:
        entry["ours"], entry["export_s"] = export_model(path, workdir, calib=str(calib))
    except StepNotSupported as exc:
        entry.update(export_s=exc.seconds, not_supported=exc)
    return entry


def add_measurements(entry: dict[str, Any]) -> None:
    from exporter.benchmark import measure_arena

    entry["ours_graph"] = graph_facts(entry["ours"])
    entry["reference_graph"] = graph_facts(entry["reference"])
    entry["size_ratio"] = entry["ours_graph"]["bytes"] / entry["reference_graph"]["bytes"]
    entry["latency"] = latency_ratio(entry["ours"], entry["reference"])
    entry["ours_arena"] = measure_arena(entry["ours"])
    entry["reference_arena"] = measure_arena(entry["reference"])


# --- the report ---------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import exporter

    out = {"python": platform.python_version()}
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "tflite-micro", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["edgeport"] = exporter.__version__
    return out


def verdict(ok: bool) -> str:
    return "within" if ok else "**OUTSIDE**"


def op_diff(ours: dict[str, int], ref: dict[str, int]) -> str:
    names = sorted(set(ours) | set(ref))
    diffs = [f"{n} {ref.get(n, 0)}->{ours.get(n, 0)}" for n in names if ours.get(n, 0) != ref.get(n, 0)]
    return ", ".join(diffs) if diffs else "identical op counts"


def analysis(entries: list[dict[str, Any]]) -> list[str]:
    """What the numbers say, derived from them (so the text cannot go stale when they change)."""
    lo, hi = LATENCY_BAND
    out: list[str] = []
    per_tensor = next((e for e in entries if e.get("per_tensor")), None)
    for e in entries:
        og, rg, lat = e["ours_graph"], e["reference_graph"], e["latency"]
        name = e["name"]
        if e["size_ratio"] > SIZE_RATIO_MAX:
            extra_meta = (og["bytes"] - og["constant_bytes"]) - (rg["bytes"] - rg["constant_bytes"])
            extra_const = og["constant_bytes"] - rg["constant_bytes"]
            text = (
                f"- {name}: size ratio {e['size_ratio']:.3f} is above {SIZE_RATIO_MAX:.2f}. The constant tensors differ "
                f"by {extra_const:+,} B; the rest of the file by {extra_meta:+,} B."
            )
            if og["per_channel_tensors"] > rg["per_channel_tensors"]:
                text += (
                    f" Ours quantizes {og['per_channel_tensors']} tensors per channel (one float32 scale and one int64 "
                    f"zero point per output channel, for weights and biases) where the reference has "
                    f"{rg['per_channel_tensors']}: that quantization metadata is the extra size."
                )
            else:
                extras = f"{og['signature_defs']} SignatureDef(s) vs {rg['signature_defs']}, metadata {og['metadata']} "
                extras += f"vs {rg['metadata']}"
                text += (
                    f" Both have {og['per_channel_tensors']} per-channel tensors; the difference is names and metadata: "
                    f"tensor names "
                    f"take {og['name_bytes']:,} B vs {rg['name_bytes']:,} B (the converter names a fused tensor after "
                    f"every op folded into it, e.g. '.../dense_1_2/MatMul;.../BiasAdd;.../batchnorm/mul_1;...'), and "
                    f"{extras}. The TFLite converter writes these; edgeport does not strip them yet."
                )
            if per_tensor is not None and per_tensor is not e and e["reference"] == per_tensor["reference"]:
                text += (
                    f" Exported per-tensor (`--per-tensor`), the ratio is {per_tensor['size_ratio']:.3f} "
                    f"and the anomaly score {per_tensor['quality']['ours']:.4f} vs this export's "
                    f"{e['quality']['ours']:.4f} (Keras {e['quality']['keras']:.4f}): per-channel buys accuracy with "
                    "flash and RAM."
                )
            out.append(text)
        arena_ratio = e["ours_arena"].bytes / e["reference_arena"].bytes
        if arena_ratio > 1.10:
            out.append(
                f"- {name}: TFLite Micro arena {e['ours_arena'].bytes:,} B vs {e['reference_arena'].bytes:,} B "
                f"({arena_ratio:.2f}x). Per-channel FULLY_CONNECTED/CONV kernels keep an int32 multiplier and shift "
                f"per output channel in the arena's persistent section"
                + (
                    f"; the per-tensor export needs {per_tensor['ours_arena'].bytes:,} B."
                    if per_tensor is not None and per_tensor is not e and e["reference"] == per_tensor["reference"]
                    else "."
                )
            )
        if not lo <= lat["ratio"] <= hi:
            out.append(
                f"- {name}: latency ratio {lat['ratio']:.3f} is outside {lo:.2f}-{hi:.2f} (A/A control "
                f"{lat['control_ratio']:.3f}, per-round IQR {lat['round_ratio_iqr'][0]:.3f}-"
                f"{lat['round_ratio_iqr'][1]:.3f}); ops (reference -> ours): {op_diff(og['ops'], rg['ops'])}."
            )
        elif e["size_ratio"] <= SIZE_RATIO_MAX and arena_ratio <= 1.10:
            out.append(
                f"- {name}: within both expectations (size {e['size_ratio']:.3f}, latency {lat['ratio']:.3f} with an "
                f"A/A control of {lat['control_ratio']:.3f})."
            )
    return out


def render(
    entries: list[dict[str, Any]],
    mnv2: dict[str, Any],
    host: dict[str, Any],
    started: str,
    total_s: float,
    skipped: list[StepNotSupported] | None = None,
) -> str:
    from exporter.report.report import human_bytes

    lo, hi = LATENCY_BAND
    lines = [
        "# edgeport vs the MLPerf Tiny reference int8 models",
        "",
        "Written by `benchmarks/compare_reference.py` (see benchmarks/README.md); do not edit by hand.",
        "",
        f"- Date: {started}; whole run {total_s:.0f} s",
        f"- Machine: {host['cpu']}, {host['cores']} usable cores, {platform.machine()}, {platform.system()}",
        f"- Host int8 kernels: {host['kernels']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in host["versions"].items()),
        f'- Our models: `exporter.export(..., target="{TARGET}")` (full int8, int8 I/O). References: the `.tflite` '
        "files of mlcommons/tiny @ 1afd2c98.",
        "- Latency: LiteRT, 1 thread, XNNPACK on (its default), measured on this host (not a device). Both models are "
        "loaded in one fresh process and timed in alternating batches; the ratio is of the medians over all runs. "
        "The A/A control times the reference against a second copy of itself in the same way: its distance from "
        "1.00 is the noise floor of the method.",
        "- Arena: `exporter.benchmark.measure_arena`, the smallest TFLite Micro `arena_size` that allocates and invokes "
        "on this x86-64 host (bisected, then 16 bytes less checked to fail).",
        "",
        f"Expectations: size ratio <= {SIZE_RATIO_MAX:.2f}; latency ratio within {lo:.2f}-{hi:.2f}.",
        "",
        "| model | size ours / reference | size ratio | latency ours / reference (median) | latency ratio "
        "(A/A control) | TFLM arena ours / reference | export time |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lat = e["latency"]
        size_ok = e["size_ratio"] <= SIZE_RATIO_MAX
        lat_ok = lo <= lat["ratio"] <= hi
        lines.append(
            f"| {e['name']} | {e['ours_graph']['bytes']:,} B / {e['reference_graph']['bytes']:,} B "
            f"| {e['size_ratio']:.4f} ({verdict(size_ok)}) "
            f"| {lat['ours_ms'] * 1000:.2f} us / {lat['reference_ms'] * 1000:.2f} us "
            f"| {lat['ratio']:.3f} ({verdict(lat_ok)}; control {lat['control_ratio']:.3f}) "
            f"| {e['ours_arena'].bytes:,} B / {e['reference_arena'].bytes:,} B | {e['export_s']:.1f} s |"
        )
    lines += ["", "## Accuracy against the float Keras model", ""]
    for e in entries:
        q = e["quality"]
        if "keras_top1" in q:
            lines.append(
                f"- {e['name']}: {q['what']}: ours {q['ours']:.0%} (top-1 {q['ours_top1']}), reference "
                f"{q['reference']:.0%} (top-1 {q['reference_top1']}); Keras top-1 {q['keras_top1']}. Two photos are a "
                "smoke test, not an accuracy measurement."
            )
        else:
            lines.append(
                f"- {e['name']}: {q['what']}: Keras float {q['keras']:.4f} (expected {AD_KERAS_SCORE_EXPECTED}), "
                f"ours {q['ours']:.4f} ({q['ours'] - q['keras']:+.4f}), reference {q['reference']:.4f} "
                f"({q['reference'] - q['keras']:+.4f})."
            )
    lines += ["", "## Reading", ""]
    lines += analysis(entries)
    lines += ["", "## Details", ""]
    for e in entries:
        lat = e["latency"]
        og, rg = e["ours_graph"], e["reference_graph"]
        lines += [
            f"### {e['name']}",
            "",
            f"- Size: ours {human_bytes(og['bytes'])} ({og['constant_bytes']:,} B of constant tensors, "
            f"{og['per_channel_tensors']} per-channel), reference {human_bytes(rg['bytes'])} "
            f"({rg['constant_bytes']:,} B constants, {rg['per_channel_tensors']} per-channel); the rest is graph "
            f"structure, tensor names and metadata ({og['bytes'] - og['constant_bytes']:,} B vs "
            f"{rg['bytes'] - rg['constant_bytes']:,} B).",
            f"- Ops (reference -> ours): {op_diff(og['ops'], rg['ops'])}.",
            f"- Latency: {lat['rounds']} rounds x {lat['batch']} runs each = {lat['runs_each']:,} runs per model; "
            f"per-round ratio IQR {lat['round_ratio_iqr'][0]:.3f}-{lat['round_ratio_iqr'][1]:.3f}, "
            f"A/A control per-round IQR {lat['control_round_iqr'][0]:.3f}-{lat['control_round_iqr'][1]:.3f}.",
            f"- TFLM arena: ours {e['ours_arena'].bytes:,} B (recorder total {e['ours_arena'].recorded_total_bytes:,}), "
            f"reference {e['reference_arena'].bytes:,} B (recorder total {e['reference_arena'].recorded_total_bytes:,}).",
            "",
        ]
    if skipped:
        lines += ["## Comparisons not run (the export wrote no model)", ""]
        lines += [f"- {exc.model}: {exc.verdict} on {TARGET}: {' '.join(exc.reasons)}" for exc in skipped]
        lines.append("")
    lines += mobilenet_lines(mnv2)
    return "\n".join(lines)


def mobilenet_lines(mnv2: dict[str, Any]) -> list[str]:
    """The MobileNetV2 export-time section; an export that is not supported is reported with its reasons."""
    lines = [
        "## MobileNetV2 (alpha 0.35, 96x96x3, 10 classes, random weights)",
        "",
        "- Random weights made non-degenerate as in the model zoo (`scripts/zoo_models.make_realistic`: "
        f"{'; '.join(mnv2['realistic'])}), calibrated on 200 seeded uniform images in [-1, 1]. Raw random weights "
        'with `calib="synthetic"` give a softmax input scale of 7.8e-09 and TFLite Micro\'s int8 softmax aborts.',
        f'- `exporter.export(..., target="{TARGET}", calib="mobilenetv2_calib.npy")`: {mnv2["export_s"]:.1f} s wall '
        "(load, calibration, conversion in a child process, verification, analysis, writing).",
    ]
    failed = mnv2.get("not_supported")
    if failed is not None:
        return [*lines, f"- Not written: {failed.verdict} on {TARGET}: {' '.join(failed.reasons)}", ""]
    arena = mnv2["arena"]
    arena_text = f"not measurable: {arena}" if isinstance(arena, Exception) else f"{arena.bytes:,} B."
    return [
        *lines,
        f"- {mnv2['params']:,} parameters -> {mnv2['graph']['bytes']:,} B int8 .tflite; LiteRT 1 thread median "
        f"{mnv2['bench'].latency.median_ms * 1000:.1f} us ({mnv2['bench'].method}).",
        f"- TFLite Micro arena: {arena_text}",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (default benchmarks/results.md)")
    args = parser.parse_args(argv)
    if not (VWW / "vww_96.h5").is_file():
        print(f"compare_reference: MLPerf Tiny assets not found under {ASSETS}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from exporter.atomic import write_text
    from exporter.benchmark import benchmark, measure_arena
    from exporter.benchmark.host import cpu_model, host_kernels_note, usable_cores
    from exporter.errors import NotSupportedError
    from exporter.tfimport import import_tensorflow_quietly

    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.perf_counter()
    import_tensorflow_quietly()
    with tempfile.TemporaryDirectory(prefix="edgeport-compare-") as tmp:
        work = Path(tmp)
        entries = []
        steps = (compare_vww, compare_ad, lambda w: compare_ad(w, per_tensor=True))
        skipped: list[StepNotSupported] = []
        for number, step in enumerate(steps, 1):
            print(f"compare_reference: comparison {number} of {len(steps)} ...", file=sys.stderr)
            try:
                entry = step(work)
            except StepNotSupported as exc:  # a result, reported with its reason
                skipped.append(exc)
                continue
            add_measurements(entry)
            entries.append(entry)
        print("compare_reference: MobileNetV2 export ...", file=sys.stderr)
        mnv2 = mobilenet_v2(work)
        if "ours" in mnv2:
            mnv2["graph"] = graph_facts(mnv2["ours"])
            try:
                mnv2["arena"] = measure_arena(mnv2["ours"])
            except NotSupportedError as exc:  # reported as measured: TFLite Micro refusing the model is a result
                mnv2["arena"] = exc
            mnv2["bench"] = benchmark(mnv2["ours"], "edgetpu", runs=200)
        host = {"cpu": cpu_model(), "cores": usable_cores(), "kernels": host_kernels_note(), "versions": versions()}
        text = render(entries, mnv2, host, started, time.perf_counter() - t0, skipped)
    write_text(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
