"""The model zoo: every architecture in scripts/zoo_models.py through the real CLI, measured as a user runs it.

Run from the repository root:

    .venv/bin/python benchmarks/zoo.py                 # the zoo and the real sizes, ~25 min on 2 idle cores
    .venv/bin/python benchmarks/zoo.py --only GRU,LSTM --no-real-sizes -o /tmp/zoo.md

For each model a child builds it (random weights made non-degenerate, see scripts/zoo_models.py) and
saves ``model.keras`` and its calibration data; then ``.venv/bin/edgeport export M --target all,onnx
--calib ... -o ...`` runs as a subprocess while this process polls /proc for the peak resident memory
of the whole process tree (the CLI and every converter/quantizer/benchmark child it starts). Each
target's verdict and reasons come from its report.json. A row is flagged when it ends in exit 1, a
traceback or a silent death (a signal, or a failure without an ``edgeport: error:`` line), or when a
"not supported" reason does not name the op, the Keras layer and the fix. Results go to
benchmarks/zoo_results.md (atomically); the raw data to the work folder's zoo.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
RESULTS = ROOT / "benchmarks" / "zoo_results.md"
EDGEPORT = ROOT / ".venv" / "bin" / "edgeport"
TARGETS = ("android-arm64", "cortex-m4", "cortex-m55-ethos-u55", "cortex-m7", "edgetpu", "onnx")
#: The default android-arm64 export (TFLite + ONNX) at the sizes phones run, with the peak RSS it must stay under.
REAL_SIZES = {"MobileNetV2-224": 3 * 1024**3, "ResNet50-224": None}
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- measuring a process tree ---------------------------------------------------------------------


def tree_rss(root: int) -> tuple[int, dict[int, int]]:
    """Resident bytes of ``root`` and all its descendants (total, per pid), from /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    per_pid, todo = {}, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
                per_pid[pid] = int(handle.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return sum(per_pid.values()), per_pid


def _who(pid: int, rss: int) -> str:
    """``exporter.convert.onnx_worker 5.1 GB``: which process of the tree holds the memory."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid} {_gb(rss)}"
    words = [a.decode("utf-8", "replace") for a in args if a]
    name = words[words.index("-m") + 1] if "-m" in words else Path(words[1] if len(words) > 1 else "?").name
    return f"{name} {_gb(rss)}"


def run_measured(cmd: list[str], log: Path, *, limit: int, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` (stdout+stderr to ``log``), polling the tree's RSS; kill it above ``limit`` bytes.

    The progress line printed last when the peak was reached names the stage that needed the memory.
    """
    t0 = time.perf_counter()
    peak, killed, stage, holders = 0, "", "", ""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
        while proc.poll() is None:
            rss, per_pid = tree_rss(proc.pid)
            if rss > peak + 32 * 1024**2:
                stage = last_progress(log) or stage
                top = sorted(per_pid.items(), key=lambda item: -item[1])[:2]
                holders = ", ".join(_who(pid, size) for pid, size in top)
            peak = max(peak, rss)
            elapsed = time.perf_counter() - t0
            if peak > limit or elapsed > timeout:
                killed = f"killed by the zoo at {_gb(peak)}" if peak > limit else f"timed out at {elapsed:.0f} s"
                os.killpg(proc.pid, 9)  # the session this run started, and only it
                proc.wait()
                break
            time.sleep(0.1)
    return {"exit": proc.returncode, "wall_s": time.perf_counter() - t0, "peak_rss": peak, "killed": killed,
            "peak_stage": stage, "peak_holders": holders}  # fmt: skip


def last_progress(log: Path) -> str:
    """The last ``[  12.3s] stage  message`` line the CLI printed so far."""
    try:
        lines = log.read_bytes()[-4096:].decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    progress = [ln for ln in lines if ln.startswith("[") and "s] " in ln]
    return progress[-1].split("] ", 1)[1].strip() if progress else ""


# --- one zoo row ----------------------------------------------------------------------------------


def build_child(name: str, folder: Path) -> dict[str, Any]:
    """Build and save the model in a child (TensorFlow never loads in this process)."""
    code = (
        "import json,sys; from pathlib import Path; sys.path[:0]=[sys.argv[3], sys.argv[3]+'/scripts'];"
        "from exporter.tfimport import import_tensorflow_quietly; import_tensorflow_quietly(); import keras;"
        "import zoo_models as z; m=z.save(sys.argv[1], Path(sys.argv[2]), keras);"
        "m['layers']=[l.name for l in z._all_layers(keras.saving.load_model(m['model']))]; print('ZOO '+json.dumps(m))"
    )
    proc = subprocess.run([sys.executable, "-c", code, name, str(folder), str(ROOT)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("ZOO "):
            return json.loads(line[4:])
    raise RuntimeError(f"building {name} failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")


def export_row(name: str, work: Path, *, targets: str, limit: int, timeout: float) -> dict[str, Any]:
    folder = work / name
    info = build_child(name, folder)
    out = folder / "out"
    cmd = [str(EDGEPORT), "export", info["model"], "--target", targets, "--calib", info["calib"], "-o", str(out)]
    print(f"[zoo] {name}: {' '.join(cmd[1:])}", flush=True)
    row = {"name": name, "params": info["params"], "realistic": info["realistic"], **info}
    row.update(run_measured(cmd, folder / "export.log", limit=limit, timeout=timeout))
    log = (folder / "export.log").read_text(encoding="utf-8", errors="replace")
    errors = [ln for ln in log.splitlines() if ln.startswith(("edgeport: error:", "edgeport: internal error"))]
    row["error"] = errors[-1] if errors else ""
    row["cli_warnings"] = [ln for ln in log.splitlines() if ln.startswith("edgeport: WARNING")]
    row["traceback"] = "Traceback (most recent call last)" in log
    row["targets"] = {}
    for target in targets.split(","):
        report = out / target / "report.json"
        if "," not in targets:  # one target writes straight into the output folder
            report = out / "report.json"
        if report.is_file():
            data = json.loads(report.read_text(encoding="utf-8"))
            notes = [w for w in data.get("warnings", []) if "not written" in w or "not supported" in w.lower()]
            written = [a.get("name", "") for a in data.get("artifacts") or [] if isinstance(a, dict)]
            row["targets"][target] = {
                "verdict": data.get("verdict"),
                "reasons": data.get("reasons", []) + notes,
                "written": [w for w in written if w.endswith((".tflite", ".onnx"))],
            }
    row["flags"] = flags(row)
    print(f"[zoo] {name}: exit {row['exit']}, {row['wall_s']:.0f} s, {row['peak_rss'] / 1024**3:.2f} GB, "
          f"{ {t: v['verdict'] for t, v in row['targets'].items()} } {row['error']} {row['flags']}", flush=True)  # fmt: skip
    return row


_OP = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\b[A-Z]{3,}[0-9]*\b|\bop\s+['`\"]?[A-Za-z]\w+")
_FIX = re.compile(r"\b(replace|use|remove|drop|set|pass|choose|unroll|switch|instead|export|rebuild|try)\b", re.I)


def _not_ok(row: dict[str, Any]) -> bool:
    """Exit 3 is the documented outcome of a target that is not supported or does not fit."""
    return any(r["verdict"] != "ok" for r in row["targets"].values())


def missing_parts(reason: str, layers: set[str]) -> list[str]:
    """What a "not supported" reason fails to name: the op, the Keras layer, the fix.

    A budget overflow (flash/RAM "over the budget") has no op to name; it must still name the layers
    that use the memory and say what to change.
    """
    needs = {
        "the op": bool(_OP.search(reason)),
        "the Keras layer": bool(re.search(r"\blayer '[^']+'", reason))
        or any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", reason) for n in layers),
        "the fix": bool(_FIX.search(reason)),
    }
    if "over the budget" in reason:
        needs.pop("the op")
    return [what for what, ok in needs.items() if not ok]


def flags(row: dict[str, Any]) -> list[str]:
    """What makes a row unacceptable: exit 1, a traceback, a silent death, or a vague "not supported"."""
    found = []
    if row["killed"]:
        found.append(row["killed"])
    if row["exit"] == 1:
        found.append("exit 1 (internal error)")
    if row["exit"] is not None and row["exit"] < 0:
        found.append(f"died by signal {-row['exit']}")
    elif row["exit"] and not row["error"] and not (row["exit"] == 3 and _not_ok(row)):
        found.append(f"exit {row['exit']} without an 'edgeport: error:' line (silent death)")
    if row["traceback"]:
        found.append("printed a traceback")
    if row["exit"] not in (0, 3) and not row["killed"]:
        found.append(f"no export: {row['error'] or 'exit ' + str(row['exit'])}")
    layers = set(row.get("layers", []))
    vague: dict[str, list[str]] = {}
    for target, result in row["targets"].items():
        if result["verdict"] != "not supported":
            continue
        for reason in result["reasons"]:
            if reason.startswith("Edge TPU partition"):  # a summary of the op reasons before it
                continue
            missing = missing_parts(reason, layers)
            if missing:
                kind = " ".join(reason.split()[:2])
                message = f"'{kind} ...' reason without {' and '.join(missing)}"
                if target not in vague.setdefault(message, []):
                    vague[message].append(target)
    found.extend(f"{', '.join(targets)}: {message}" for message, targets in vague.items())
    return found


# --- the results file -----------------------------------------------------------------------------


def versions() -> str:
    names = ("edgeport", "tensorflow-cpu", "keras", "tf2onnx", "onnxruntime", "ai-edge-litert", "tflite-micro")
    out = []
    for dist in names:
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def host_line() -> str:
    from exporter.benchmark.host import host_kernels_note

    return host_kernels_note()


def summarize(reasons: list[str], keep: int = 2) -> str:
    """The reasons, with runs of the same message for other ops/layers counted instead of repeated."""
    shapes: dict[str, list[str]] = {}
    for reason in reasons:
        shape = re.sub(r"\(op \d+\)|'[^']*'", "_", reason)
        shapes.setdefault(shape, []).append(reason)
    parts = []
    for same in shapes.values():
        parts.extend(same[:keep])
        if len(same) > keep:
            parts.append(f"(and {len(same) - keep} more like it)")
    return " ".join(parts)


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Counts derived from the rows, so the text cannot go stale when they change."""
    if not rows:
        return []
    every = [r["name"] for r in rows if r["exit"] == 0]
    partial = [r["name"] for r in rows if r["exit"] == 3]
    failed = [f"{r['name']} (exit {r['exit']})" for r in rows if r["exit"] not in (0, 3)]
    flagged = [r["name"] for r in rows if r["flags"]]
    return [
        f"- {len(rows)} models: {len(every)} ok on every target ({', '.join(every) or 'none'}); {len(partial)} with at "
        f"least one target not supported (exit 3); {len(failed)} not exported ({', '.join(failed) or 'none'}).",
        f"- {len(flagged)} flagged ({', '.join(flagged) or 'none'}); see below.",
    ]


def _gb(value: int) -> str:
    return f"{value / 1024**3:.2f} GB"


def _stage(row: dict[str, Any]) -> str:
    """Where the peak happened: the CLI's progress stage and the biggest processes of the tree then."""
    parts = [" ".join(row.get("peak_stage", "").split()), row.get("peak_holders", "")]
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""


def _cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "—"
    return {"ok": "ok", "not supported": "**not supported**", "does not fit": "does not fit"}.get(
        result["verdict"], str(result["verdict"])
    )


def render(rows: list[dict[str, Any]], real: list[dict[str, Any]], command: str) -> str:
    from zoo_models import ZOO

    lines = [
        "# Model zoo: the architectures people ship, through `edgeport export --target all,onnx`",
        "",
        f"Generated by `{command}` on {datetime.date.today().isoformat()}.",
        "",
        f"- Versions: {versions()}.",
        f"- Host: {host_line()}",
        "- Each model is built by `scripts/zoo_models.py` with random weights (keras.applications with "
        "`weights=None`), saved as .keras with 100 seeded uniform calibration samples in the range it expects, "
        "and exported by the real CLI as a subprocess: `.venv/bin/edgeport export model.keras --target all,onnx "
        "--calib calib.npy -o out` (an .npz keyed by input name for the multi-input model).",
        "- **Non-degenerate random weights** (no training): every BatchNormalization's moving mean and variance "
        "are set from the data (one forward pass in training mode with momentum 0), Normalization layers without "
        "a fixed mean are adapted to their input, and each output's Dense/1x1-conv head is rescaled so its "
        "logits, centred per class, have unit variance on the data. Raw random heads give logit ranges so narrow "
        "that TFLite Micro's int8 softmax aborts.",
        "- Peak RSS is of the whole process tree (the CLI and every child it starts), polled from /proc every "
        "0.1 s. Wall time includes importing TensorFlow (~3 s).",
        "",
        "| model | what | params | exit | wall | peak RSS (stage) | " + " | ".join(TARGETS) + " | flags |",
        "|---|---|---:|---:|---:|---:|" + "---|" * len(TARGETS) + "---|",
    ]
    for row in rows:
        cells = [_cell(row["targets"].get(t)) for t in TARGETS]
        lines.append(
            f"| {row['name']} | {ZOO[row['name']].what} | {row['params']:,} | {row['exit']} | {row['wall_s']:.0f} s | "
            f"{_gb(row['peak_rss'])}{_stage(row)} | " + " | ".join(cells) + f" | {'; '.join(row['flags']) or 'none'} |"
        )
    lines += ["", *summary(rows)]
    lines += ["", "## Reasons, per model and target", ""]
    for row in rows:
        details = [
            f"  - {t}: {r['verdict']}: {summarize(r['reasons'])}" for t, r in row["targets"].items() if r["reasons"]
        ]
        if row["error"]:
            details.insert(0, f"  - export: `{row['error']}`")
        if details:
            lines += [f"- **{row['name']}**", *details]
    flagged = [row for row in rows if row["flags"]]
    lines += ["", "## Flagged rows", ""]
    lines += [f"- {row['name']}: {'; '.join(row['flags'])}" for row in flagged] or ["None."]
    if real:
        lines += [
            "",
            "## Real sizes: the default android-arm64 export (TFLite + ONNX) at 224x224",
            "",
            "`.venv/bin/edgeport export model.keras --target android-arm64 --calib calib.npy -o out` "
            "(android-arm64 writes TFLite and ONNX by default), 100 calibration samples.",
            "",
            "| model | params | exit | wall | peak RSS of the process tree (stage) | limit | android-arm64 | written "
            "| result |",
            "|---|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for row in real:
            limit = REAL_SIZES[row["name"]]
            ok = row["exit"] in (0, 3) and not row["flags"] and (limit is None or row["peak_rss"] <= limit)
            target = row["targets"].get("android-arm64")
            reasons = summarize(target["reasons"]) if target else row["error"]
            lines.append(
                f"| {row['name']} ({ZOO[row['name']].what}) | {row['params']:,} | {row['exit']} | {row['wall_s']:.0f} s | "
                f"{_gb(row['peak_rss'])}{_stage(row)} | "
                f"{_gb(limit) if limit else 'completes'} | {_cell(target)} {reasons} | "
                f"{', '.join(target.get('written', [])) if target else ''} | {'pass' if ok else 'FAIL'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from zoo_models import ZOO

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma list of zoo models (default: all)")
    parser.add_argument("--no-real-sizes", action="store_true", help="skip the 224x224 section")
    parser.add_argument("--real-sizes-only", action="store_true", help="only the 224x224 section")
    parser.add_argument("--limit-gb", type=float, default=12.0, help="kill an export above this tree RSS")
    parser.add_argument("--timeout", type=float, default=1200.0, help="kill an export after this many seconds")
    parser.add_argument("--work", type=Path, help="keep models and exports here (default: a temporary folder)")
    parser.add_argument("--render", type=Path, metavar="ZOO_JSON", help="only re-render a run's zoo.json")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from exporter.atomic import write_text

    if args.render:
        data = json.loads(args.render.read_text(encoding="utf-8"))
        for row in data["rows"] + data["real"]:
            row["flags"] = flags(row)
        write_text(args.output, render(data["rows"], data["real"], data.get("command", "python benchmarks/zoo.py")))
        return 1 if any(r["flags"] for r in data["rows"] + data["real"]) else 0
    names = [n for n in (args.only.split(",") if args.only else ZOO) if n not in REAL_SIZES]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"unknown zoo models {unknown}; choose from {', '.join(ZOO)}")
    limit = int(args.limit_gb * 1024**3)
    command = "python benchmarks/zoo.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()

    with tempfile.TemporaryDirectory(prefix="edgeport-zoo-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [] if args.real_sizes_only else [
            export_row(n, work, targets=",".join(TARGETS), limit=limit, timeout=args.timeout) for n in names
        ]  # fmt: skip
        real = [] if args.no_real_sizes else [
            export_row(n, work, targets="android-arm64", limit=limit, timeout=args.timeout) for n in REAL_SIZES
        ]  # fmt: skip
        payload = {"rows": rows, "real": real, "command": command.strip()}
        (work / "zoo.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    write_text(args.output, render(rows, real, command.strip()))
    print(f"[zoo] wrote {args.output}")
    return 1 if any(r["flags"] for r in rows + real) else 0


if __name__ == "__main__":
    sys.exit(main())
