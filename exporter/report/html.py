"""report.html: the same facts as report.json, as one self-contained page a person opens in a browser.

Self-contained means no request leaves the page: the CSS is inline and every chart is a PNG
``data:`` URI (see :mod:`exporter.report.plots`), so the page works offline, from a CI artifact, or
attached to a ticket. Every string from the report goes through :func:`html.escape`: model, layer
and tensor names come from user files, and a finding may quote any of them.

The page is rendered from the report.json dictionary only (not from live objects), so ``edgeport
report DIR`` can rebuild it from what an export wrote, and a page never shows a number the JSON lacks.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .report import CONVERSION_NOTES, human_bytes

log = logging.getLogger(__name__)

#: How many rows the per-layer error chart and table show.
WORST_LAYERS = 15
NOT_BENCHMARKED = "not benchmarked (run with --bench)"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.2em 2em;
color:#1d232b;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #d5dbe2;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #d5dbe2;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f1f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;padding:.2em .7em;border-radius:.3em;font-weight:600}
.ok{background:#dff3e1;color:#14532d}.bad{background:#fde2e1;color:#7f1d1d}.forced{background:#fff2cc;color:#6b4e00}
.sev-error{color:#b42318;font-weight:600}.sev-warning{color:#9a6700;font-weight:600}
.muted{color:#5b6673;font-size:.9em}code{background:#f1f4f7;padding:0 .25em;border-radius:.2em;word-break:break-all}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
"""


def render_html(report_json: Mapping[str, Any]) -> str:
    """The whole page for one target's report.json dictionary."""
    r = report_json
    model = r.get("model") or {}
    profile = r.get("profile") or {}
    title = f"edgeport report: {model.get('name', 'model')} → {r.get('target', '?')}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _verdict(r, profile),
        _model(model, r.get("calibration"), r.get("conversion") or {}),
        _fit(r.get("fit") or []),
        _ops(r.get("verification") or {}),
        _fidelity(r.get("fidelity")),
        _guard(r.get("guard")),
        _latency(r.get("benchmark")),
        _size(r.get("size_by_layer")),
        _layer_errors(r.get("layer_errors")),
        _device_sections(r),
        _list_section("Warnings", r.get("warnings") or []),
        _artifacts(r.get("artifacts") or []),
        f'<p class="muted">edgeport {_e(r.get("edgeport_version", "?"))}; report schema '
        f"{_e(r.get('schema_version', '?'))}. Generated from report.json; no external resources.</p>",
        "</body></html>",
        "",
    ]
    return "\n".join(p for p in parts if p)


def write_html_report(directory: Path) -> list[Path]:
    """Rebuild report.html (and report.md) from ``directory/report.json``, or from every
    ``directory/*/report.json`` of a multi-target export; returns the files written or kept.

    A missing or unreadable report.json raises :class:`UsageError` naming the file.
    """
    from ..atomic import write_text

    sources = _report_files(Path(directory))
    written: list[Path] = []
    for path in sources:
        data = _load(path)
        page = path.parent / "report.html"
        write_text(page, render_html(data))
        written.append(page)
        markdown = _markdown(data)
        if markdown is not None:
            write_text(path.parent / "report.md", markdown)
            written.append(path.parent / "report.md")
    return written


# --- loading ----------------------------------------------------------------------------------------


def _report_files(directory: Path) -> list[Path]:
    if not directory.exists():
        raise UsageError(
            f"Report directory {directory} does not exist.", hint="Pass the -o folder of an edgeport export."
        )
    if directory.is_file():
        if directory.name == "report.json":
            return [directory]
        raise UsageError(f"{directory} is a file; 'edgeport report' needs the folder holding report.json.")
    own = directory / "report.json"
    if own.is_file():
        return [own]
    nested = sorted(directory.glob("*/report.json"))
    if not nested:
        raise UsageError(
            f"No report.json in {directory} or its sub-folders.",
            hint="Pass the output folder of 'edgeport export' (one target) or its parent (several targets).",
        )
    return nested


def _load(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{path} is not valid JSON ({type(exc).__name__}: {str(exc).splitlines()[0]}).",
            hint="Re-run 'edgeport export' to write it again.",
        ) from exc
    if not isinstance(data, dict) or "target" not in data or "verdict" not in data:
        raise UsageError(
            f"{path} is not an edgeport report (expected a JSON object with 'target' and 'verdict').",
            hint="Re-run 'edgeport export' to write it again.",
        )
    return data


def _markdown(data: Mapping[str, Any]) -> str | None:
    """report.md from the JSON, through the same renderer an export uses; None when the JSON lacks
    what it needs (an older schema), in which case the existing report.md is left as it is."""
    from .markdown import render_markdown
    from .report import Artifact, FitCheck, TargetReport

    known = {
        "schema_version", "edgeport_version", "model", "calibration", "evaluation", "target", "verdict", "reasons",
        "warnings", "conversion", "verification", "memory", "fit", "fidelity", "artifacts", "profile",
    }  # fmt: skip
    try:
        report = TargetReport(
            target=data["target"],
            profile=data.get("profile") or {},
            verdict=data["verdict"],
            reasons=list(data.get("reasons") or []),
            warnings=list(data.get("warnings") or []),
            conversion=data.get("conversion") or {},
            verification=data.get("verification") or {},
            memory=data.get("memory") or {},
            fit=[
                FitCheck(f["resource"], f["needed_bytes"], f["budget_bytes"], f["method"])
                for f in data.get("fit") or []
            ],
            fidelity=data.get("fidelity"),
            artifacts=[Artifact(a["name"], a["path"], a["bytes"], a["sha256"]) for a in data.get("artifacts") or []],
            output_dir=str(data.get("output_dir", "")),
            extra={k: v for k, v in data.items() if k not in known},
        )
        common = {k: data[k] for k in ("edgeport_version", "model", "calibration", "evaluation") if k in data}
        return render_markdown(report, common)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning(
            "report.md not rebuilt from report.json (%s: %s); the existing one is kept", type(exc).__name__, exc
        )
        return None


# --- sections ---------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _num(value: Any, fmt: str = "{:.4g}", none: str = "-") -> str:
    if value is None:
        return none
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isinf(number):
        return "inf"
    return fmt.format(number)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{_e(uri)}" alt="{_e(alt)}">'


def _verdict(r: Mapping[str, Any], profile: Mapping[str, Any]) -> str:
    verdict = str(r.get("verdict", "?"))
    css = "ok" if verdict == "ok" else ("forced" if "force" in verdict else "bad")
    out = [
        f'<p><span class="verdict {css}">Verdict: {_e(verdict)}</span> on {_e(profile.get("title", r.get("target")))}</p>'
    ]
    if r.get("reasons"):
        out.append("<ul>" + "".join(f"<li>{_e(x)}</li>" for x in r["reasons"]) + "</ul>")
    return "\n".join(out)


def _model(model: Mapping[str, Any], calibration: Mapping[str, Any] | None, conversion: Mapping[str, Any]) -> str:
    items = []
    if model:
        items.append(
            f"source <code>{_e(model.get('path'))}</code> ({_e(model.get('format'))}, loaded with {_e(model.get('loader'))})"
        )
        for spec in model.get("inputs") or []:
            items.append(f"input <code>{_e(spec.get('name'))}</code>: {_e(spec.get('shape'))} {_e(spec.get('dtype'))}")
    if calibration:
        synthetic = "" if calibration.get("representative", True) else " — <b>synthetic, not representative</b>"
        items.append(
            f"calibration: {_e(calibration.get('samples'))} of {_e(calibration.get('available'))} samples from "
            f"<code>{_e(calibration.get('source'))}</code> (seed {_e(calibration.get('seed'))}){synthetic}"
        )
    if conversion.get("scheme"):
        items.append(f"conversion: {_e(conversion['scheme'])}")
    items.extend(_e(conversion[key]) for key in CONVERSION_NOTES if conversion.get(key))
    if not items:
        return ""
    return "<h2>Model</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _fit(fit: Sequence[Mapping[str, Any]]) -> str:
    if not fit:
        return ""
    rows = [
        (
            f.get("resource"),
            human_bytes(f.get("needed_bytes")),
            human_bytes(f.get("budget_bytes")) if f.get("budget_bytes") is not None else "no limit",
            "yes" if f.get("fits") else "NO",
            f.get("method"),
        )
        for f in fit
    ]
    return "<h2>Does it fit?</h2>" + _table(("resource", "needed", "budget", "fits", "how"), rows, numeric=(1, 2))


def _ops(ver: Mapping[str, Any]) -> str:
    if not ver:
        return ""
    out = ["<h2>Ops on this target</h2>"]
    ops = ver.get("ops") or {}
    if ops:
        rows = [(op, info.get("count"), "yes" if info.get("supported") else "NO") for op, info in sorted(ops.items())]
        out.append(_table(("op", "count", "supported"), rows, numeric=(1,)))
    fully = ver.get("fully_integer")
    if fully is not None:
        out.append(f"<p>Fully integer: <b>{'yes' if fully else 'no'}</b></p>")
    findings = ver.get("findings") or []
    out.append("<h2>Findings</h2>")
    if findings:
        items = [
            f'<li><span class="sev-{_e(f.get("severity"))}">{_e(f.get("severity"))}</span> '
            f"<code>{_e(f.get('code'))}</code>: {_e(f.get('message'))}</li>"
            for f in findings
        ]
        out.append("<ul>" + "".join(items) + "</ul>")
    else:
        out.append("<p>No findings: every op and tensor passed the target's checks.</p>")
    return "\n".join(out)


def _fidelity(fid: Mapping[str, Any] | None) -> str:
    if not fid or not fid.get("outputs"):
        return "<h2>Fidelity (float vs int8)</h2><p>Not measured (no calibration or evaluation data).</p>"
    rows = [
        (
            o.get("name"),
            o.get("samples"),
            _pct(o.get("float_accuracy")),
            _pct(o.get("int8_accuracy")),
            _num(o.get("accuracy_drop_pp"), "{:.2f}"),
            _pct(o.get("top1_agreement")),
            _num(o.get("mean_abs_error")),
            _num(o.get("max_abs_error")),
            _num(o.get("snr_db"), "{:.1f}", none="inf"),
            _pct(o.get("within_one_lsb")),
        )
        for o in fid["outputs"]
    ]
    header = (
        "output",
        "samples",
        "float acc.",
        "int8 acc.",
        "drop (pp)",
        "top-1 agreement",
        "mean abs err",
        "max abs err",
        "SNR dB",
        "within 1 LSB",
    )
    return f'<h2>Fidelity (float vs int8)</h2><p class="muted">{_e(fid.get("inputs_from"))}</p>' + _table(
        header, rows, numeric=range(1, 10)
    )


def _guard(guard: Mapping[str, Any] | None) -> str:
    if not guard:
        return ""
    out = [f"<h2>Accuracy guard: {_e(guard.get('requirement', ''))}</h2>"]
    if guard.get("note"):
        out.append(f"<p>{_e(guard['note'])}</p>")
    attempts = guard.get("attempts") or []
    if attempts:
        metric = guard.get("metric") or "measured"
        rows = []
        for a in attempts:
            if a.get("kept"):
                result = "kept"
            elif a.get("passed"):
                result = "passed"
            else:
                result = a.get("note") or "failed"
            rows.append((a.get("name"), a.get("detail"), _num(a.get("value"), "{:.2f}"), result))
        out.append(_table(("attempt", "what changed", metric, "result"), rows, numeric=(2,)))
    return "\n".join(out)


def _benchmarks(bench: Any) -> list[Mapping[str, Any]]:
    if not bench:
        return []
    items = bench if isinstance(bench, list) else [bench]
    return [b for b in items if isinstance(b, Mapping)]


def _timings(b: Mapping[str, Any]) -> list[float]:
    values = b.get("timings_ms")
    if values is None and isinstance(b.get("latency"), Mapping):
        values = b["latency"].get("timings_ms")
    return [float(v) for v in values or [] if v is not None]


def _bench_label(b: Mapping[str, Any], index: int) -> str:
    bits = [str(b[k]) for k in ("target", "interpreter") if b.get(k)]
    if b.get("threads_used"):
        bits.append(f"{b['threads_used']} thr")
    return " ".join(bits) or f"benchmark {index + 1}"


def _latency(bench: Any) -> str:
    from .plots import latency_plot

    out = ["<h2>Latency</h2>"]
    benches = [(b, _timings(b)) for b in _benchmarks(bench)]
    benches = [(b, t) for b, t in benches if t]
    if not benches:
        out.append(f"<p>{_e(NOT_BENCHMARKED)}</p>")
        return "\n".join(out)
    series: dict[str, list[float]] = {}
    rows = []
    for i, (b, timings) in enumerate(benches):
        label = _bench_label(b, i)
        while label in series:
            label += "'"
        series[label] = timings
        ordered = sorted(timings)
        median = (
            ordered[len(ordered) // 2]
            if len(ordered) % 2
            else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
        )
        rows.append(
            (label, len(timings), _num(median), _num(_percentile(ordered, 90)), _num(_percentile(ordered, 99)),
             _num(ordered[0]), _num(ordered[-1]), b.get("method") or b.get("how") or "")
        )  # fmt: skip
    out.append(_img(latency_plot(series), "latency distribution"))
    out.append(
        _table(
            ("benchmark", "runs", "median ms", "p90 ms", "p99 ms", "min ms", "max ms", "how"), rows, numeric=range(1, 7)
        )
    )
    notes = [b.get("device_note") for b, _ in benches if b.get("device_note")]
    out.extend(f'<p class="muted">{_e(n)}</p>' for n in dict.fromkeys(notes))
    return "\n".join(out)


def _percentile(ordered: Sequence[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _size(rows: Sequence[Mapping[str, Any]] | None) -> str:
    from .plots import size_plot

    if not rows:
        return ""
    table = [
        (
            r.get("layer"),
            r.get("class") or "",
            human_bytes(r.get("bytes")),
            f"{int(r.get('params') or 0):,}",
            _pct(r.get("share")),
        )
        for r in rows
    ]
    return (
        "<h2>Size by layer</h2>"
        '<p class="muted">measured: bytes of the constant tensors (weights, biases) in the .tflite, by the Keras layer '
        "they belong to; share is of the whole file.</p>"
        + _img(size_plot(rows), "size by layer")
        + _table(("layer", "class", "bytes", "params", "share of file"), table, numeric=(2, 3, 4))
    )


def _layer_errors(errors: Mapping[str, Any] | None) -> str:
    from .plots import layer_error_plot, row_label

    if not errors or not errors.get("rows"):
        return ""
    rows = list(errors["rows"])
    worst = rows[:WORST_LAYERS]
    table = [
        (
            row_label(r),
            r.get("op"),
            _num(r.get("local_snr_db"), "{:.1f}", none="inf" if r.get("local") == "measured" else "n/a"),
            _num(r.get("snr_db"), "{:.1f}", none="inf"),
            _num(r.get("rmse_over_range"), "{:.4f}"),
            _num(r.get("mean_abs_error")),
            r.get("shape"),
        )
        for r in worst
    ]
    more = f" ({len(rows) - len(worst)} more in report.json)" if len(rows) > len(worst) else ""
    return (
        "<h2>Where int8 lost accuracy (per layer)</h2>"
        f'<p class="muted">{_e(errors.get("method", ""))}</p>'
        + _img(layer_error_plot(rows, WORST_LAYERS), "per-layer quantization error")
        + _table(
            ("layer", "op", "SNR dB (op alone)", "SNR dB (end to end)", "RMSE / range", "mean abs err", "shape"),
            table,
            numeric=(2, 3, 4, 5),
        )
        + f'<p class="muted">Worst {len(worst)} ops first{_e(more)}.</p>'
    )


def _device_sections(r: Mapping[str, Any]) -> str:
    """Edge TPU, firmware, ONNX, sparsity and device sections: the same text report.md shows.

    One renderer (``report.extra_sections``) owns what those sections say; this turns its small
    Markdown subset (headings, bullets, tables, italics, code spans) into escaped HTML.
    """
    from .markdown import extra_sections

    lines = extra_sections({k: v for k, v in r.items() if k != "benchmark"})
    out: list[str] = []
    table: list[list[str]] = []

    def inline(text: str) -> str:
        escaped = _e(text)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped))

    def flush() -> None:
        if table:
            header, *rows = [row for row in table if not set("".join(row)) <= set("-: ")]
            out.append(_table(header, rows) if rows else _table(header, []))
            table.clear()

    in_list = False
    for line in lines:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("_") and line.endswith("_") and len(line) > 2:
            out.append(f'<p class="muted">{inline(line[1:-1])}</p>')
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def _list_section(title: str, items: Sequence[Any]) -> str:
    if not items:
        return ""
    return f"<h2>{_e(title)}</h2><ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _artifacts(artifacts: Sequence[Mapping[str, Any]]) -> str:
    if not artifacts:
        return ""
    rows = [(a.get("name"), human_bytes(a.get("bytes")), a.get("sha256")) for a in artifacts]
    return "<h2>Files</h2>" + _table(("file", "size", "sha256"), rows, numeric=(1,))
