"""The results file of benchmarks/speed.py: header, per-row timings, issue #15's targets, written-file identity.

Every sentence that states a result is derived from the numbers, so the text cannot go stale when they change.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from pathlib import Path
from typing import Any

ONE_TARGET_MAX, ALL_MAX, DEMO_MAX = 1.5, 1.25, 0.5
SINGLE = ("cortex-m4", "android-arm64")
DEMO_LABEL = "make demo export"


def _pair(entry: dict[str, Any] | None, key: str, scale: float = 1.0, digits: int = 1) -> str:
    value = (entry or {}).get(key)
    if not value:
        return "—"
    return f"{value['min'] / scale:.{digits}f} / {value['median'] / scale:.{digits}f}"


def _med(entry: dict[str, Any] | None, key: str) -> float | None:
    value = (entry or {}).get(key)
    return value["median"] if value else None


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def versions(source_version: str) -> str:
    out = [f"edgeport {source_version}", f"python {platform.python_version()}"]
    for dist in ("tensorflow-cpu", "keras", "tf2onnx", "onnxruntime", "ai-edge-litert", "tflite-micro"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


def source_version(source: Path) -> str:
    """``__version__`` of the exporter measured (read from its file: this process imports no TensorFlow)."""
    init = source / "exporter" / "__init__.py"
    found = re.search(r'__version__ = "([^"]+)"', init.read_text(encoding="utf-8")) if init.is_file() else None
    return found.group(1) if found else "?"


def header(about: dict[str, Any], loads: list[tuple[float, float, float]], total_s: float, runs: int, note: str,
           hand: str, version: str) -> list[str]:  # fmt: skip
    from exporter.benchmark.host import cpu_model, host_kernels_note, usable_cores

    one = [load[0] for load in loads]
    hand_text = (
        "`tf.lite.TFLiteConverter.from_keras_model(model)`"
        if hand == "keras"
        else "`model.export(dir, format='tf_saved_model', input_signature=[batch-1 spec])` + `from_saved_model(dir)`"
    )
    lines = [
        "# Export speed: `exporter.export` against a hand conversion (issue #15)",
        "",
        "Written by `benchmarks/speed.py` (its docstring says how to run it); do not edit by hand.",
        "",
    ]
    if note:
        lines += [f"**{note}**", ""]
    lines += [
        f"- Date: {about['date']}; whole run {total_s / 60:.0f} min; {runs} run(s) of every measurement, "
        "in round-robin order (run 1 of every row, then run 2, ...); `min / median` over the runs.",
        f"- Command: `{about['command']}`",
        f"- Code measured: {about['code']}.",
        f"- Machine: {cpu_model()}, {usable_cores()} usable cores, {platform.machine()}, {platform.system()}.",
        f"- Host int8 kernels: {host_kernels_note()}",
        f"- Load average (1/5/15 min) at start {_load(loads[0])}, at end {_load(loads[-1])}; the 1-min value before "
        f"each measurement ranged {min(one):.2f}-{max(one):.2f} on {usable_cores()} cores. Other processes may have "
        "shared the machine: wall seconds then grow, CPU seconds much less.",
        f"- Versions: {versions(version)}.",
        "- Every measurement is a fresh child process (`benchmarks/_speed_child.py`) measured as a whole tree "
        "(`benchmarks/_speed_measure.py`): **process** wall = this script's clock around the child; tree CPU = "
        "user+sys of the child and every descendant it waited for (`os.wait4`); peak RSS = the largest sum of "
        "resident memory over the child and its live descendants, polled from /proc every 0.1 s. Inside the child, "
        "the **TF import** phase (`import keras, tensorflow`; `import exporter` too for an export) is timed apart "
        "from the **work** phase (wall, and CPU of the child plus its reaped children).",
        f"- Hand conversion (work phase): load the model with Keras (the `.h5` files with the usual "
        f"`DepthwiseConv2D(groups=...)` fix), {hand_text}, `optimizations=[Optimize.DEFAULT]`, "
        "`representative_dataset` over exactly the samples edgeport calibrates with (edgeport's loader picked them "
        "once, untimed), `supported_ops=[TFLITE_BUILTINS_INT8]`, int8 input and output, bytes written to a file.",
        "- Export (work phase): `exporter.export(model, target=T, calib=<the spec a user passes>, output_dir=...)` "
        "with defaults (android-arm64 writes TFLite and ONNX). `make demo export` is the Makefile's `demo` "
        "command run directly (`edgeport export examples/demo/digits_cnn.keras --target all --calib ...:x --eval "
        "...:x,y --bench --bench-runs 20 -o ...`), one fresh CLI process, no setup.",
        "",
    ]
    return lines


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def rows_table(stats: dict[str, dict[str, Any]], models: list[Any]) -> list[str]:
    lines = [
        "## Measurements",
        "",
        "Seconds and GB as `min / median`. Work = the conversion or export alone (TensorFlow already imported in "
        "that process); process = the whole child from start to exit.",
        "",
        "| model | measurement | TF import wall s | work wall s | work CPU s | process wall s | tree CPU s | "
        "tree peak RSS GB | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    titles = {m.key: m.title for m in models}
    for s in stats.values():
        if s["what"] == "tf_import":
            continue
        lines.append(
            f"| {titles.get(s['model'], s['model'])} | {_what(s['what'])} | {_pair(s, 'import_wall_s')} | "
            f"{_pair(s, 'work_wall_s')} | {_pair(s, 'work_cpu_s')} | {_pair(s, 'wall_s')} | {_pair(s, 'cpu_s')} | "
            f"{_pair(s, 'peak_rss', 1024**3, 2)} | {_result(s)} |"
        )
    return lines


def _what(what: str) -> str:
    return {"hand": "hand conversion", "make-demo": "`make demo` export (CLI)"}.get(what, f"export `{what}`")


def _result(s: dict[str, Any]) -> str:
    parts = []
    if s["verdicts"]:
        counts: dict[str, int] = {}
        for verdict in s["verdicts"].values():
            counts[verdict] = counts.get(verdict, 0) + 1
        parts.append(", ".join(f"{n} {v}" for v, n in counts.items()) if len(s["verdicts"]) > 1 else
                     next(iter(s["verdicts"].values())))  # fmt: skip
    if s["what"] == "make-demo":
        parts.append(f"exit {'/'.join(map(str, s['exits']))}")
    if s["failed"]:
        parts.append(f"**{s['failed']} of {s['runs']} runs failed**: {'; '.join(s['errors'])[:300]}")
    if s["children_left"]:
        parts.append(f"{s['children_left']} child process(es) still running after the work")
    if s["stragglers"]:
        parts.append(f"{s['stragglers']} process(es) left behind after exit (killed)")
    return "; ".join(parts) or "ok"


def targets_section(stats: dict[str, dict[str, Any]], models: list[Any], stored: dict[str, Any] | None) -> list[str]:
    """Issue #15's three targets, each with its formula, the medians it uses and PASS/FAIL."""
    tf = stats.get("tf import")
    tf_s, tf_cpu = _med(tf, "import_wall_s"), _med(tf, "import_cpu_s")
    lines = ["## Issue #15 targets (medians)", ""]
    if tf_s is not None:
        lines += [
            f"One TensorFlow import in a fresh process (`import keras, tensorflow`): {_pair(tf, 'import_wall_s', digits=2)} s "
            f"wall, {_pair(tf, 'import_cpu_s', digits=2)} s CPU (min / median); that whole process: "
            f"{_pair(tf, 'wall_s', digits=2)} s, peak RSS {_pair(tf, 'peak_rss', 1024**3, 2)} GB.",
            "",
        ]
    lines += [
        f"1. One target: export work <= {ONE_TARGET_MAX}x (hand conversion work + one TF import).",
        "",
        "| model | target | export work s | hand work s + TF import s | ratio (wall) | "
        f"<= {ONE_TARGET_MAX} | ratio (CPU) |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for m in models:
        hand = stats.get(f"{m.key} hand")
        for target in SINGLE:
            ex = stats.get(f"{m.key} export {target}")
            hw, ew = _med(hand, "work_wall_s"), _med(ex, "work_wall_s")
            if hw is None or ew is None or tf_s is None:
                continue
            ratio = ew / (hw + tf_s)
            cpu = _med(ex, "work_cpu_s") / (_med(hand, "work_cpu_s") + tf_cpu)
            lines.append(f"| {m.key} | {target} | {ew:.1f} | {hw:.1f} + {tf_s:.1f} | {ratio:.2f} | "
                         f"{_verdict(ratio <= ONE_TARGET_MAX)} | {cpu:.2f} |")  # fmt: skip
    lines += [
        "",
        f"2. `all` (5 targets) against one target: export work `all` <= {ALL_MAX}x export work of one target; "
        "shown against each single target measured.",
        "",
        f"| model | all s | cortex-m4 s | android-arm64 s | all / cortex-m4 | <= {ALL_MAX} | all / android-arm64 | "
        f"<= {ALL_MAX} |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for m in models:
        a, c, d = (_med(stats.get(f"{m.key} export {t}"), "work_wall_s") for t in ("all", *SINGLE))
        if a is None or c is None or d is None:
            continue
        lines.append(f"| {m.key} | {a:.1f} | {c:.1f} | {d:.1f} | {a / c:.2f} | {_verdict(a / c <= ALL_MAX)} | "
                     f"{a / d:.2f} | {_verdict(a / d <= ALL_MAX)} |")  # fmt: skip
    demo = stats.get(DEMO_LABEL)
    if demo and _med(demo, "wall_s") is not None:
        now = _med(demo, "wall_s")
        base = ((stored or {}).get("baseline") or {}).get(DEMO_LABEL) or {}
        before = (base.get("wall_s") or {}).get("median")
        lines += ["", f"3. `make demo` export (CLI, 5 targets, --eval, --bench): process wall <= {DEMO_MAX}x the "
                  "recorded run's (the hashes file's `baseline`).", ""]  # fmt: skip
        if before:
            lines.append(f"   Now {now:.1f} s (median; min {demo['wall_s']['min']:.1f} s), recorded {before:.1f} s: "
                         f"ratio {now / before:.2f}, {_verdict(now / before <= DEMO_MAX)}.")  # fmt: skip
        else:
            lines.append(f"   This run is the record: {now:.1f} s median (min {demo['wall_s']['min']:.1f} s); the "
                         f"target for later runs is <= {now * DEMO_MAX:.1f} s.")  # fmt: skip
    return lines


def identity_section(ident: list[dict[str, Any]], stored: dict[str, Any] | None, hashes_name: str) -> list[str]:
    recorded = (stored or {}).get("recorded", {})
    lines = [
        "## Written files",
        "",
        "sha256 of every file each export wrote (`benchmarks/_speed_identity.py`). Model files (.tflite, .onnx, "
        "C arrays, model.mk, ...) must be byte-identical; reports are compared after removing timings, scratch and "
        "run paths (`normalized`); an .onnx whose bytes differ is also compared in a canonical form (constants "
        "named after their content, deduplicated, sorted), which tells tf2onnx's naming and ordering of equal "
        "constants from a change of the graph or the weights. "
        + (
            f"Record: {recorded.get('date', '?')}, {recorded.get('code', '?')}."
            if recorded
            else f"No record existed: this run wrote {hashes_name}."
        ),  # fmt: skip
        "",
        "| export | files | against the record | across this run's repetitions |",
        "|---|---:|---|---|",
    ]
    for e in ident:
        record = e["record"] if isinstance(e["record"], str) else _diff_text(e["record"])
        across = "1 run only" if e["runs"] < 2 else _diff_text(e["across_runs"])
        lines.append(f"| {e['key']} | {e['files']} | {record} | {across} |")
    return lines


def _diff_text(diffs: list[dict[str, list[str]]]) -> str:
    """One cell: what broke byte identity first, then what is only explained (record variants, ONNX order)."""
    from _speed_identity import failing

    def files(key: str) -> list[str]:
        return sorted({f for d in diffs for f in d[key]})

    bad = sorted({f for d in diffs for f in failing(d)})
    order_only = set(files("reordered"))
    named = [
        f"{f} (same nodes and constants; only constant names/order differ)" if f in order_only else f for f in bad[:8]
    ]
    parts = ["**differ: " + ", ".join(named) + "**"] if bad else ["model files identical"]
    unstable = set(files("unstable"))
    explained = [f for f in files("reordered") if f in unstable and f not in bad]
    if files("variant"):
        parts.append("equal to another variant the record wrote: " + ", ".join(files("variant")[:6]))
    if explained:
        parts.append("not deterministic in the record; same nodes and constants, only constant names/order differ: "
                     + ", ".join(explained[:6]))  # fmt: skip
    if files("reports_differ"):
        parts.append("reports differ (normalized): " + ", ".join(files("reports_differ")[:6]))
    elif not bad:
        parts.append("reports identical (normalized)")
    return "; ".join(parts)


def render(stats: dict[str, Any], ident: list[dict[str, Any]], stored: dict[str, Any] | None, *, prepared: dict[str, Any],
           models: list[Any], about: dict[str, Any], loads: list[Any], total_s: float, runs: int, note: str, hand: str,
           check_only: bool) -> str:  # fmt: skip
    lines = header(about, loads, total_s, runs, note, hand, about.get("edgeport_version", "?"))
    if not check_only:
        lines += ["## Models", ""]
        lines += [f"- {m.key}: {m.title}; {prepared.get(m.key, {}).get('params', 0):,} parameters; calibration "
                  f"`{_short(m.calib)}`{' ' + str(m.options) if m.options else ''} ({prepared.get(m.key, {}).get('samples', '?')} samples used)."
                  for m in models]  # fmt: skip
        lines += ["", *rows_table(stats, models), "", *targets_section(stats, models, stored), ""]
    lines += identity_section(ident, stored, about.get("hashes", "the hashes file"))
    return "\n".join(lines) + "\n"


def _short(path: str) -> str:
    return re.sub(r"^.*/(shared/assets|examples/demo|models)/", r"\1/", path)
