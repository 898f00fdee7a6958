"""report.md: the facts of report.json in the order a person reading a build folder wants them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import CONVERSION_NOTES, SCHEMA_VERSION, TargetReport, all_warnings, human_bytes, npu_caveat


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render_markdown(report: TargetReport, common: dict[str, Any]) -> str:
    """report.md: the same facts as report.json, for a person reading a build folder."""
    lines = [f"# edgeport report: {common['model']['name']} -> {report.target}", ""]
    title = report.profile.get("title", report.target)
    lines.append(f"**Verdict: {report.verdict}** on {title}.")
    lines.extend(f"- {r}" for r in report.reasons)
    caveat = npu_caveat(report)
    if caveat:
        lines.append(f"- {caveat}: every figure below is for the CPU alone (see Warnings).")
    lines.append("")
    m = common["model"]
    lines += ["## Model", "", f"- source: `{m['path']}` ({m['format']}, loaded with {m['loader']})"]
    for spec in m["inputs"]:
        lines.append(f"- input `{spec['name']}`: {spec['shape']} {spec['dtype']}")
    for note in m.get("notes", []):
        lines.append(f"- note: {note}")
    cal = common.get("calibration")
    if cal:
        rep = "" if cal["representative"] else " — **synthetic, not representative**"
        lines += [
            "",
            "## Calibration",
            "",
            f"- {cal['samples']} of {cal['available']} samples from `{cal['source']}` (seed {cal['seed']}){rep}",
        ]
        if cal.get("preprocessing"):
            lines.append(f"- preprocessing: {cal['preprocessing']}")
        for i, (lo, hi) in enumerate(cal["value_ranges"]):
            lines.append(f"- input {i} value range: {lo:.4g} .. {hi:.4g}")
    conv = report.conversion
    if conv:
        lines += ["", "## Conversion", "", f"- {conv.get('scheme', '')}"]
        lines.extend(f"- {pin}" for pin in conv.get("input_quantization", []))
        lines.extend(f"- {conv[key]}" for key in CONVERSION_NOTES if conv.get(key))
        if "seconds" in conv:
            lines.append(f"- converter: {conv.get('converter', '')}, {conv['seconds']:.1f} s (measured)")
    ver = report.verification
    if ver:
        lines += ["", "## Ops on this target", "", "| op | count | supported |", "|---|---:|---|"]
        for op, info in sorted(ver.get("ops", {}).items()):
            lines.append(f"| {op} | {info['count']} | {'yes' if info['supported'] else '**no**'} |")
        lines += ["", f"- fully integer: {'yes' if ver.get('fully_integer') else '**no**'}"]
        for io in ver.get("io", []):
            q = ""
            if io.get("scale"):
                q = f", scale {io['scale'][0]:.6g}, zero point {io['zero_point'][0]}"
            lines.append(f"- {io.get('kind', 'tensor')} `{io['name']}`: {io['shape']} {io['dtype']}{q}")
        findings = ver.get("findings", [])
        if findings:
            lines += ["", "### Findings", ""]
            lines += [f"- **{f['severity']}** `{f['code']}`: {f['message']}" for f in findings]
    if report.memory or report.fit:
        lines += ["", "## Memory", "", "| resource | needed | budget | fits | how |", "|---|---:|---:|---|---|"]
        for f in report.fit:
            lines.append(
                f"| {f.resource} | {human_bytes(f.needed_bytes)} | {human_bytes(f.budget_bytes)} | "
                f"{'yes' if f.fits else '**no**'} | {f.method} |"
            )
    if report.fidelity:
        fid = report.fidelity
        lines += ["", "## Fidelity (float vs int8)", "", f"- inputs: {fid['inputs_from']}", ""]
        lines += [
            "| output | samples | float acc. | int8 acc. | drop (pp) | top-1 agreement | mean abs err | max abs err | SNR dB "
            "| within 1 LSB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for o in fid["outputs"]:
            snr = "inf" if o["snr_db"] is None else f"{o['snr_db']:.1f}"
            drop = "-" if o.get("accuracy_drop_pp") is None else f"{o['accuracy_drop_pp']:.2f}"
            lines.append(
                f"| {o['name']} | {o['samples']} | {_pct(o.get('float_accuracy'))} | {_pct(o.get('int8_accuracy'))} | {drop} | "
                f"{_pct(o['top1_agreement'])} | {o['mean_abs_error']:.4g} | {o['max_abs_error']:.4g} | {snr} "
                f"| {_pct(o.get('within_one_lsb'))} |"
            )
    guard = report.extra.get("guard")
    if guard:
        lines += ["", f"## Accuracy guard: {guard['requirement']}", ""]
        if guard.get("note"):
            lines.append(f"- {guard['note']}")
        if guard.get("attempts"):
            lines += ["| attempt | what | measured | passed |", "|---|---|---:|---|"]
            for a in guard["attempts"]:
                value = "-" if a["value"] is None else f"{a['value']:.2f}"
                passed = "**kept**" if a["kept"] else ("yes" if a["passed"] else a.get("note") or "no")
                lines.append(f"| {a['name']} | {a['detail']} | {value} | {passed} |")
    layer_errors = report.extra.get("layer_errors")
    if layer_errors and layer_errors.get("rows"):
        lines += ["", "## Worst layers (int8 vs float activations)", "", f"_{layer_errors.get('method', '')}_", ""]
        lines += ["| layer | op | SNR dB (op alone) | SNR dB (end to end) | RMSE / range |", "|---|---|---:|---:|---:|"]
        for row in layer_errors["rows"][:10]:
            local = "-" if row.get("local_snr_db") is None else f"{row['local_snr_db']:.1f}"
            snr = "inf" if row.get("snr_db") is None else f"{row['snr_db']:.1f}"
            lines.append(
                f"| {row.get('layer') or row.get('tensor')} | {row.get('op')} | {local} | {snr} | {_num(row.get('rmse_over_range'))} |"
            )
    lines += extra_sections(report.extra)
    warnings = all_warnings(report, common)
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if report.artifacts:
        lines += ["", "## Files", ""] + [
            f"- `{a.name}` ({human_bytes(a.bytes)}, sha256 {a.sha256[:16]}…)" for a in report.artifacts
        ]
    lines += ["", f"_edgeport {common['edgeport_version']}; report schema {SCHEMA_VERSION}._", ""]
    return "\n".join(lines)


def extra_sections(extra: dict[str, Any]) -> list[str]:
    """Edge TPU partition, ONNX files and host benchmarks, when the export produced them."""
    lines: list[str] = []
    tpu = extra.get("edgetpu")
    if tpu and "verdict" in tpu:
        lines += ["", "## Edge TPU partition", "", f"- {tpu['verdict']} ({tpu.get('how', 'predicted')})"]
        cache = tpu.get("param_cache") or {}
        if cache:
            lines.append(
                f"- parameters: {human_bytes(cache.get('param_bytes'))} of {human_bytes(cache.get('cache_bytes'))} on-chip cache"
            )
        if (tpu.get("tools") or {}).get("note"):
            lines.append(f"- {tpu['tools']['note']}")
    lines += _cortex_m_lines(extra.get("cortex_m"))
    dense = extra.get("dense_quantization")  # exporter.devices.cortex_m.dense_quant: the rule's decision
    if dense and dense.get("summary"):
        lines += ([] if extra.get("cortex_m") else ["", "## Firmware (TFLite Micro)", ""]) + [
            f"- Dense layers: {dense['summary']}"
        ]
    onnx = extra.get("onnx")
    if onnx:
        lines += ["", "## ONNX", "", f"- opset {onnx.get('opset')}, converter {onnx.get('converter')}"]
        for kind in ("float", "int8"):
            model = onnx.get(kind)
            if not model:
                continue
            check = model.get("check") or {}
            facts = [f"{human_bytes(model.get('size_bytes'))}"]
            if check.get("max_abs_error") is not None:
                facts.append(f"max abs error vs Keras {check['max_abs_error']:.3g}")
            if check.get("top1_agreement") is not None:
                facts.append(f"top-1 agreement {_pct(check['top1_agreement'])}")
            if check.get("snr_db") is not None:
                facts.append(f"SNR {check['snr_db']:.1f} dB")
            lines.append(
                f"- `{Path(model.get('path', kind)).name}`: {', '.join(facts)} ({check.get('measured', 'measured')})"
            )
            host = model.get("host_check")  # int8: the host's optimized kernels, labelled with its CPU
            if host:
                agree = (
                    f"top-1 agreement {_pct(host['top1_agreement'])}, "
                    if host.get("top1_agreement") is not None
                    else ""
                )
                snr = f"SNR {host['snr_db']:.1f} dB" if host.get("snr_db") is not None else "SNR inf"
                lines.append(f"  - {host.get('semantics', 'host kernels')}: {agree}{snr}")
    bench = extra.get("benchmark")
    if bench:
        lines += ["", "## Host benchmark", "", "_Host timings are not device timings._", ""]
        lines += [
            "| model | interpreter | threads | median ms | p90 ms | p99 ms | min ms | peak RSS |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for b in bench if isinstance(bench, list) else [bench]:
            lat = b.get("latency") or {}
            lines.append(
                f"| {b.get('model', '')} | {b.get('interpreter')} {b.get('interpreter_version', '')} | {b.get('threads_used')} | "
                f"{_ms(lat.get('median_ms'))} | {_ms(lat.get('p90_ms'))} | {_ms(lat.get('p99_ms'))} | {_ms(lat.get('min_ms'))} | "
                f"{human_bytes(b.get('peak_rss_bytes'))} |"
            )
            arena = b.get("arena")
            if arena:
                lines.append(f"| | TFLite Micro arena: {arena['bytes']:,} B ({arena.get('method', '')}) | | | | | | |")
        hosts = {b.get("host_int8_note") for b in (bench if isinstance(bench, list) else [bench])} - {None, ""}
        lines += ["", *(f"- Host CPU: {note}" for note in sorted(hosts))] if hosts else []
    sparsity = extra.get("sparsity")
    if sparsity:
        from ..compress.sparsity import render_markdown as render_sparsity

        lines += render_sparsity(sparsity)
    device = extra.get("device_benchmark")
    if device:
        desc = device.get("device") or {}
        lines += [
            "",
            "## Device benchmark",
            "",
            f"- {desc.get('manufacturer', '')} {desc.get('model', '')} ({desc.get('soc', '')}, {desc.get('abi', '')}), "
            f"Android {desc.get('android_version', '')}: {device.get('method', '')}",
        ]
        timings = device.get("timings_us") or {}
        inference = timings.get("inference") or {}
        if inference:
            lines.append(
                f"- inference over {inference.get('count')} runs: avg {inference.get('avg')} us, min {inference.get('min')} us, "
                f"max {inference.get('max')} us, std {inference.get('std')} us; init {timings.get('init')} us"
            )
    return lines


def _cortex_m_lines(section: Any) -> list[str]:
    """Firmware facts for Cortex-M / Ethos-U targets (exporter.devices.cortex_m)."""
    if not section:
        return []
    data = section.to_dict() if hasattr(section, "to_dict") else section
    lines = ["", "## Firmware (TFLite Micro)", ""]
    resolver = data.get("op_resolver") or {}
    ops = ", ".join(o["method"] + "()" for o in resolver.get("ops", []))
    lines.append(f"- op resolver: MicroMutableOpResolver<{resolver.get('count', 0)}> with {ops}")
    arena = data.get("arena")
    if arena:
        lines.append(f"- MODEL_ARENA_SIZE {arena['bytes']:,} B: {arena['derivation']}")
    latency = data.get("latency")
    if latency:
        lines.append(f"- device latency: {latency['estimated_ms']:.3f} ms, {latency['method']}")
    vela = data.get("vela")
    if vela:
        lines.append(
            f"- Vela {vela['vela_version']} ({vela['accelerator']}, {vela['system_config']}, {vela['memory_mode']}): "
            f"SRAM {vela['sram_bytes']:,} B, off-chip flash {vela['off_chip_flash_bytes']:,} B, "
            f"{vela['npu_ops']} NPU / {vela['cpu_ops']} CPU ops, {vela['cycles_npu']:,} NPU cycles, "
            f"{vela['inference_ms']:.3f} ms (estimate)"
        )
        lines.extend(
            f"  - on the CPU: {c['op']} `{c['output']}`: {c['reason']}" for c in vela.get("cpu_op_details", [])
        )
    if data.get("firmware_files"):
        lines.append(f"- files: {', '.join('`' + f + '`' for f in data['firmware_files'])}")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
