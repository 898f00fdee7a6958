"""The results file of benchmarks/mcu_flash.py: tables, PASS/FAIL against issue #16's targets, a reading.

Every sentence that states a result is derived from the measured numbers, so the text cannot go stale
when they change.
"""

from __future__ import annotations

from typing import Any


def _lut(row: Any) -> dict[str, Any]:
    return row.report.get("lut_compression") or {}


def _arena(row: Any) -> int | None:
    return ((row.report.get("cortex_m") or {}).get("arena") or {}).get("measured_bytes")


def _alt(row: Any) -> str:
    lut = _lut(row)
    arena = (lut.get("check") or {}).get("arena") if lut.get("shipped") else None
    if not arena:
        return "-"
    return f"{arena['compressed_with_alt']:,} + {arena['alt_decompression']:,} B"


def _bits(row: Any) -> str:
    lut = _lut(row)
    if not lut.get("shipped"):
        return "not LUT-compressed" + (f" ({lut['note']})" if lut.get("note") else "")
    bits = sorted({t["bits"] for t in lut.get("compressed", [])})
    return f"{len(lut['compressed'])} tensors, {'/'.join(map(str, bits))}-bit"


def _dense(row: Any) -> str:
    dense = row.report.get("dense_quantization") or {}
    return dense.get("chosen") or ("per-channel" if row.report.get("conversion", {}).get("per_channel") else "-")


def _lat(row: Any) -> str:
    if not row.latency:
        return "-"
    lo, hi = row.latency["iqr"]
    return f"{row.latency['ratio']:.2f} ({lo:.2f}-{hi:.2f})"


def _twin(row: Any) -> str:
    if not row.report.get("flash_packing"):
        return "-"
    if row.twin_identical is None:
        return "not checked (no same-size plain twin)"
    return "byte-identical" if row.twin_identical else "**DIFFERENT**"


def _distinct(row: Any) -> str:
    if not row.distinct:
        return "-"
    k = row.config.cluster
    ok = row.distinct["max_distinct"] <= k
    left = row.distinct.get("left", 0)
    return (
        f"{row.distinct['max_distinct']} in {row.distinct['tensors']} clustered tensors"
        + ("" if ok else " **> K**")
        + (f"; {left} kept exact (no table would pay)" if left else "")
    )


def _agreement(q: dict[str, Any]) -> str:
    flips = q["n"] - q["agree"]
    return f"{q['agree']}/{q['n']}" + (f" ({q['borderline_flips']} of {flips} flips borderline)" if flips else "")


def _quality_ok(family: dict[str, Any], row: Any) -> bool:
    if family["family"] == "vww":
        return row.quality["agree"] >= family["reference_quality"]["agree"]
    return abs(row.quality["delta"]) <= family["score_tol"]


def _verdict(family: dict[str, Any], row: Any) -> tuple[bool, str]:
    ratio = row.ours.stat().st_size / family["reference_bytes"]
    flash_ok = ratio <= family["flash_max"]
    why = [f"flash {ratio:.3f}x {'<=' if flash_ok else '>'} {family['flash_max']:.2f}x"]
    if family["family"] == "vww":
        ours, ref = row.quality["agree"], family["reference_quality"]["agree"]
        quality_ok = ours >= ref
        why.append(f"agreement {ours} {'>=' if quality_ok else '<'} reference {ref}")
    else:
        delta, tol = row.quality["delta"], family["score_tol"]
        quality_ok = abs(delta) <= tol
        why.append(f"score {delta:+.1%} {'within' if quality_ok else 'outside'} {tol:.0%}")
    return flash_ok and quality_ok, "; ".join(why)


def _pass(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def _score(q: dict[str, float]) -> str:
    return f"{q['score']:.4f} ({q['delta']:+.1%}; held out {q['held_out_delta']:+.1%})"


def family_table(family: dict[str, Any]) -> list[str]:
    vww = family["family"] == "vww"
    ref_bytes, ref_arena = family["reference_bytes"], family["reference_arena"].bytes
    control = family["latency"]["control"]
    quality_head = "top-1 agreement with float" if vww else "anomaly score (vs float; held-out odd windows)"
    lines = [
        f"| export | flash (model_int8.tflite) | / reference | TFLM arena | arena + alt. decompression memory "
        f"| latency / reference (per-round IQR) | {quality_head} | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rq = family["reference_quality"]
    ref_quality = _agreement(rq) if vww else _score(rq)
    lo, hi = control["iqr"]
    lines.append(
        f"| MLPerf Tiny reference `{family['reference'].name}` | {ref_bytes:,} B | 1.000 | {ref_arena:,} B | - "
        f"| A/A control {control['ratio']:.2f} ({lo:.2f}-{hi:.2f}) | {ref_quality} | - |"
    )
    shared = family.get("reference_shared_bytes")
    if shared and shared != ref_bytes:
        lines.append(
            f"| the same reference, zero points stored once (as edgeport ships) | {shared:,} B "
            f"| {shared / ref_bytes:.3f} | - | - | - | identical outputs | - |"
        )
    for row in family["rows"]:
        if row.ours is None:
            lines.append(f"| {row.config.label} | not written: {row.error} | | | | | | **FAIL** |")
            continue
        size = row.ours.stat().st_size
        q = row.quality
        quality = _agreement(q) if vww else _score(q)
        ok, why = _verdict(family, row)
        lines.append(
            f"| {row.config.label} | {size:,} B | {size / ref_bytes:.3f} | {_arena(row) or 0:,} B | {_alt(row)} "
            f"| {_lat(row)} | {quality} | {_pass(ok)}: {why} |"
        )
    return lines


def detail_table(family: dict[str, Any]) -> list[str]:
    lines = [
        "| export | LUT (shipped file) | Dense quantization | clustering error | max distinct values per channel "
        "(plain twin) | export's own bit-exact check | shipped vs twin on this run's inputs | export wall |",
        "|---|---|---|---:|---|---|---|---:|",
    ]
    for row in family["rows"]:
        if row.ours is None:
            continue
        clustering = row.report.get("conversion", {}).get("int8_clustering") or {}
        error = f"{clustering['mean_abs_error_lsb']:.3f} LSB" if clustering else "-"
        check = (
            (_lut(row).get("check") or {}) if _lut(row).get("shipped") else row.report.get("zero_points_check") or {}
        )
        own = f"{'bit-exact' if check.get('bit_exact') else '**NOT bit-exact**'} on {check['inputs']}" if check else "-"
        lines.append(
            f"| {row.config.label} | {_bits(row)} | {_dense(row)} | {error} | {_distinct(row)} | {own} "
            f"| {_twin(row)} | {row.export_s:.1f} s |"
        )
    return lines


def ethos_table(families: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | export | Vela flash, clustered | Vela flash, same model unclustered | saving | Vela SRAM |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for family in families:
        for row in family["rows"]:
            vela = (row.ethos.get("cortex_m") or {}).get("vela") or {}
            short = family["family"].upper()
            if row.config.cluster is None:
                if vela:
                    lines.append(
                        f"| {short} | {row.config.label} | - | {vela['off_chip_flash_bytes']:,} B (this export) | - "
                        f"| {vela['sram_bytes']:,} B |"
                    )
                continue
            clustering = row.ethos.get("vela_clustering")
            if not clustering:
                said = [w for w in row.ethos.get("warnings", []) if "Vela" in w]
                lines.append(f"| {short} | {row.config.label} | not reported | {' '.join(said) or '-'} | | |")
                continue
            lines.append(
                f"| {short} | {row.config.label} | {clustering['clustered_flash_bytes']:,} B "
                f"| {clustering['unclustered_flash_bytes']:,} B | {clustering['flash_saving']:.1%} "
                f"| {clustering['clustered_sram_bytes']:,} B (unclustered {clustering['unclustered_sram_bytes']:,} B) |"
            )
    return lines


def reading(families: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for family in families:
        rows = {r.config.key: r for r in family["rows"] if r.ours is not None}
        short = family["family"].upper()
        verdicts = {k: _verdict(family, r)[0] for k, r in rows.items()}
        passing = [rows[k].config.label for k, ok in verdicts.items() if ok]
        flash_ok = [
            r.config.label
            for r in rows.values()
            if r.ours.stat().st_size <= family["flash_max"] * family["reference_bytes"]
        ]
        quality_ok = [r.config.label for r in rows.values() if _quality_ok(family, r)]
        out.append(
            f"- {short}: {len(passing)} of {len(family['rows'])} exports meet the target"
            + (f" ({', '.join(passing)})" if passing else "")
            + f". Flash target alone: {', '.join(flash_ok) or 'none'}. Quality target alone: "
            + f"{', '.join(quality_ok) or 'none'}."
        )
        if "k8" in rows and "p50k8" in rows:
            a, b = rows["k8"].ours.stat().st_size, rows["p50k8"].ours.stat().st_size
            out.append(
                f"- {short}: pruning 50% before K=8 changes the shipped file by {b - a:+,} B ({a:,} -> {b:,} B). "
                "A LUT index costs ceil(log2 K) bits whatever its value: zero is just one of the K table entries, so "
                "zeros buy no flash in a LUT-compressed tensor (they would only with a sparse or entropy-coded format)."
            )
        ref_arena = family["reference_arena"].bytes
        grown = [(r, _arena(r)) for r in rows.values() if _lut(r).get("shipped") and _arena(r)]
        if grown:
            worst = max(grown, key=lambda x: x[1])
            arena = _lut(worst[0])["check"]["arena"]
            out.append(
                f"- {short}: the LUT files need a TFLite Micro arena of up to {worst[1]:,} B against the reference's "
                f"{ref_arena:,} B ({worst[1] / ref_arena:.2f}x; {worst[0].config.label}): DECODE writes each decoded "
                f"weight tensor into the arena just before its consumer runs. With alternate decompression memory "
                f"(MicroInterpreter::SetDecompressionMemory) that export needs {arena['compressed_with_alt']:,} B of "
                f"arena plus a {arena['alt_decompression']:,} B region; the uncompressed model of the same export "
                f"needs {arena['reference']:,} B."
            )
        dense = {_dense(r) for r in rows.values()}
        if family["family"] == "ad":
            out.append(
                "- AD: Dense quantization chosen by `--dense-quant auto` per export: "
                + ", ".join(f"{r.config.label} {_dense(r)}" for r in rows.values())
                + (
                    ". Per-channel keeps an int32 multiplier and shift per output channel in the arena, so the "
                    "uncompressed arena is above the reference's per-tensor one before any decoding."
                    if "per-channel" in dense
                    else "."
                )
            )
        bad = [r.config.label for r in rows.values() if r.twin_identical is False]
        over = [r.config.label for r in rows.values() if r.distinct and r.distinct["max_distinct"] > r.config.cluster]
        if bad:
            out.append(f"- {short}: **shipped file differs from its plain twin** on this run's inputs: {bad}.")
        if over:
            out.append(f"- {short}: **more than K distinct values in a clustered channel** of the plain twin: {over}.")
        slow = [r for r in rows.values() if r.latency and r.latency["ratio"] > 1.10]
        if slow:
            out.append(
                f"- {short}: host latency through TFLite Micro is above the reference's by more than 10% for "
                + ", ".join(f"{r.config.label} ({r.latency['ratio']:.2f}x)" for r in slow)
                + ": DECODE unpacks every compressed tensor on every invoke (reference kernels on x86-64; CMSIS-NN "
                "on a Cortex-M has a different balance, not measured here)."
            )
    savings = [
        (f["family"].upper(), r.config.label, r.ethos["vela_clustering"]["flash_saving"])
        for f in families
        for r in f["rows"]
        if r.ethos.get("vela_clustering")
    ]
    if savings:
        lo, hi = min(s[2] for s in savings), max(s[2] for s in savings)
        larger = [f"{m} {c}" for m, c, s in savings if s < 0]
        out.append(
            f"- Ethos-U: Vela compiles every clustered model. Its flash against the same model unclustered goes from "
            f"{hi:.1%} smaller to {-lo:.1%} {'larger' if lo < 0 else 'smaller'} "
            f"({', '.join(f'{m} {c} {s:.1%}' for m, c, s in savings)}, saving)"
            + (f"; clustering makes it larger for {', '.join(larger)}." if larger else ".")
        )
    big = [(f, r) for f in families for r in f["rows"] if r.ethos.get("vela_clustering")]
    big = [(f, r) for f, r in big if r.ethos["vela_clustering"]["flash_saving"] >= 0.10]
    if big:
        out.append(
            "- Ethos-U: Vela's flash falls by 10% or more only for "
            + ", ".join(
                f"{f['family'].upper()} {r.config.label} ({r.ethos['vela_clustering']['flash_saving']:.1%}, Dense "
                f"{_dense(r)})"
                for f, r in big
            )
            + ". With one scale per tensor, K values per table means K int8 values in the whole tensor; per-channel "
            "tables leave up to K x channels distinct values in it, and Vela's encoder gains little from those."
        )
    for family in families:
        plain = next((r for r in family["rows"] if r.config.cluster is None and r.ethos), None)
        vela = ((plain.ethos.get("cortex_m") or {}).get("vela") or {}) if plain else {}
        if not vela:
            continue
        base = vela["off_chip_flash_bytes"]
        worse = [
            f"{r.config.label} {r.ethos['vela_clustering']['clustered_flash_bytes']:,} B"
            for r in family["rows"]
            if r.ethos.get("vela_clustering")
            and r.config.prune is None
            and r.ethos["vela_clustering"]["clustered_flash_bytes"] > base
        ]
        if worse:
            out.append(
                f"- Ethos-U {family['family'].upper()}: clustered exports whose Vela flash is above the plain export's "
                f"{base:,} B: {', '.join(worse)}. 'Unclustered' in `vela_clustering` is the same conversion without "
                "clustering (same Dense quantization), not the plain export."
            )
    return out


def render(families: list[dict[str, Any]], prov: dict[str, Any]) -> str:
    dirty = f", with uncommitted changes in {', '.join(prov['dirty'])}" if prov["dirty"] else " (clean)"
    vww = next(f for f in families if f["family"] == "vww")
    ad = next(f for f in families if f["family"] == "ad")
    lat = {f["family"]: f["latency"] for f in families}
    lines = [
        "# Clustered, LUT-compressed weights on a microcontroller: edgeport vs the MLPerf Tiny references",
        "",
        "Written by `benchmarks/mcu_flash.py` (see benchmarks/README.md); do not edit by hand.",
        "",
        f"- Date: {prov['date']}; whole run {prov['total_s']:.0f} s",
        f"- Code: commit {prov['commit']}{dirty}",
        f"- Machine: {prov['machine']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()),
        '- Exports: `exporter.export(model, target=["cortex-m4", "cortex-m55-ethos-u55"], calib=..., cluster=K)`; '
        'VWW calibrated on the 2 photos of assets/images scaled 0..1 (`input_range="0,1"`), AD on the 196 '
        'five-frame windows of the shipped sample. Prune rows: `prune=PruneSpec(method="magnitude", '
        "sparsity=0.5)` (unstructured, per layer, default skips, no fine-tuning), then K=8. References: the "
        "int8 `.tflite` files of mlcommons/tiny.",
        "- Flash: the bytes of the cortex-m4 `model_int8.tflite`, the file the C array holds, in TFLite Micro's "
        "flash layout: per-channel zero points stored once per tensor (TFLite Micro reads one for all channels; "
        "8 B per channel less) and clustered weights LUT-compressed when that paid. The reference row below it is "
        "the MLPerf Tiny file with the same zero-point layout, to show how much of a ratio that layout alone explains.",
        "- TFLM arena: report.json `cortex_m.arena.measured_bytes` (decoded weights in the arena: the "
        "MODEL_ARENA_SIZE basis without decompression memory); the reference's by `exporter.benchmark.measure_arena`. "
        "Both are the smallest arena that allocates and invokes on this x86-64 host, bisected. 'arena + alt.': "
        "report.json `lut_compression.check.arena` (arena beside the smallest alternate decompression region).",
        f"- Latency: TFLite Micro (the tflite-micro wheel's x86-64 reference kernels, not CMSIS-NN, not a device), "
        f"all of a model's files loaded in one fresh child and invoked in round-robin batches, order rotating: "
        f"VWW {lat['vww']['rounds']} rounds x {lat['vww']['batch']} invokes, AD {lat['ad']['rounds']} x "
        f"{lat['ad']['batch']}, after {lat['vww']['warmup']}/{lat['ad']['warmup']} warm-up invokes, seeded random "
        "int8 input. Ratio = median of a file's per-round medians / the reference's; the A/A control times a "
        "byte copy of the reference the same way (its distance from 1.00 is the method's noise).",
        f"- VWW agreement: top-1 of each int8 model run in TFLite Micro (one child per model, float input "
        f"quantized with the model's input scale) vs the float Keras model on the same {vww['float']['inputs']}. "
        f"The float model calls {vww['float']['classes'][1]} of them class 1 (person) and "
        f"{vww['float']['classes'][0]} class 0; {vww['float']['borderline']} are borderline (float top-1 probability "
        f"below {vww['float']['borderline_below']}), and each row says how many of its flips are among them.",
        f"- AD score: mean over {ad['float']['inputs']} of MSE(input, output), outputs dequantized; float Keras "
        f"{ad['float']['score']:.4f}. Each int8 model in TFLite Micro, one child per model. edgeport calibrates "
        f"(and takes its clustering statistics) on {ad['float']['calibration']}: the score of the whole sample is "
        "the target's, the held-out one shows what fitting the even windows is worth on windows it did not see "
        "(neighbouring windows share 4 of their 5 frames, so it is not independent data). The reference int8 "
        "file was calibrated by MLPerf Tiny on its own data.",
        "- 'shipped vs twin': the shipped file against the plain (per-channel zero points, uncompressed) model of "
        "the same export (the Ethos-U target's model_int8.tflite, used only when its size equals report.json "
        "`flash_packing.analysed_bytes`), both in TFLite Micro on all of this run's inputs, raw int8 outputs "
        "compared. 'max distinct values per channel' counts the tensors the export clustered (report.json "
        "`conversion.int8_clustering.tensors`); the others it kept exact, since no value table would have paid.",
        "- WORK is the run's scratch folder. Export wall times include the Ethos-U target (a second conversion "
        "and two Vela runs for the clustered exports), one export after another on this machine.",
        "",
        f"Targets (issue #16): VWW flash <= {vww['flash_max']:.2f}x of {vww['reference_bytes']:,} B with top-1 "
        f"agreement >= the reference int8's; AD flash <= {ad['flash_max']:.2f}x of {ad['reference_bytes']:,} B with "
        f"the anomaly score within {ad['score_tol']:.0%} of float.",
        "",
    ]
    for family in families:
        lines += [f"## {family['name']}", "", *family_table(family), "", *detail_table(family), ""]
    lines += ["## Ethos-U55 (cortex-m55-ethos-u55): Vela flash, clustered vs unclustered", ""]
    lines += [
        "report.json `vela_clustering` of the same exports (Vela 5.2.0 off-chip flash of the clustered model and "
        "of the same model converted without clustering; Vela's figures, not a device's). The Ethos-U target "
        "ships the uncompressed clustered file: Vela reads plain int8 tensors, not TFLite Micro's lookup tables.",
        "",
        *ethos_table(families),
        "",
        "## Reading",
        "",
        *reading(families),
        "",
    ]
    return "\n".join(lines)
