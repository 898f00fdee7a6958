"""Export speed: ``exporter.export`` against a hand-written TFLite conversion, each in a fresh process.

Run from the repository root (VWW and AD need ../shared/assets):

    .venv/bin/python benchmarks/speed.py                      # 4 models x 3 runs, writes speed_results.md
    .venv/bin/python benchmarks/speed.py --quick              # demo CNN and AD, 1 run
    .venv/bin/python benchmarks/speed.py --rev HEAD           # measure the committed exporter/, not the tree
    .venv/bin/python benchmarks/speed.py --check-identical    # only: are the written files as recorded?

For the demo CNN, VWW, AD and MobileNetV2 (alpha 0.35, 96x96) it measures, in round-robin over
``--runs`` repetitions: one ``import tensorflow``; the hand conversion (``TFLiteConverter`` full int8
on the same calibration samples); ``exporter.export`` to cortex-m4, to android-arm64 and to ``all``;
and the ``make demo`` export command (the CLI, 5 targets, --eval, --bench). Every measurement is a
fresh child process (benchmarks/_speed_child.py) timed by phase (TensorFlow import, then the work)
while this process measures the child's whole tree: wall, CPU (user+sys) and peak RSS
(benchmarks/_speed_measure.py). It prints the issue #15 targets with PASS/FAIL, hashes every file each
export wrote and compares them with benchmarks/speed_hashes.json (written when absent or with
``--record``, together with the timings the "half of today's demo time" target is measured against).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from _speed_identity import identity, identity_ok, input_fingerprint, output_hashes, record_exports  # noqa: E402
from _speed_measure import run_tree  # noqa: E402

ASSETS = Path(os.environ.get("EDGEPORT_SHARED_ASSETS", ROOT.parent / "shared" / "assets"))
MLPERF = ASSETS / "models" / "mlperf_tiny"
RESULTS = BENCH / "speed_results.md"
HASHES = BENCH / "speed_hashes.json"
DEMO = ROOT / "examples" / "demo"
TARGETS = ("cortex-m4", "android-arm64", "all")
#: Issue #15's targets: one target <= 1.5x (hand + one TF import); all <= 1.25x one target; demo <= 0.5x before.
ONE_TARGET_MAX, ALL_MAX, DEMO_MAX = 1.5, 1.25, 0.5
QUICK_MODELS = ("demo", "ad")
CHECK_MODELS = ("demo", "vww", "ad")


@dataclass
class Model:
    """One benchmark model: its file, its calibration spec as a user passes it, and the export options."""

    key: str
    title: str
    model: Path
    calib: str
    options: dict[str, Any] = field(default_factory=dict)
    build: str = ""  # what the prepare job makes first: "ad_windows", "mobilenetv2"
    source: str = ""

    def calib_path(self) -> Path:
        return Path(self.calib.split(":", 1)[0])


def all_models(work: Path) -> dict[str, Model]:
    made = work / "models"
    return {
        "demo": Model("demo", "demo CNN (digits 8x8x1, 14k params)", DEMO / "digits_cnn.keras",
                      f"{DEMO / 'digits_calib.npz'}:x"),
        "vww": Model("vww", "VWW (vww_96.h5, MobileNetV1 0.25, 96x96x3)", MLPERF / "visual_wake_words" / "vww_96.h5",
                     str(ASSETS / "images"), {"input_range": "0,1"}),
        "ad": Model("ad", "AD (ad01.h5, FC autoencoder 640)", MLPERF / "anomaly_detection" / "ad01.h5",
                    str(made / "ad_windows.npy"), build="ad_windows",
                    source=str(MLPERF / "anomaly_detection" / "normal_id_01_00000000_hist_librosa.bin")),
        "mnv2": Model("mnv2", "MobileNetV2 (alpha 0.35, 96x96x3, 10 classes, seeded random weights)",
                      made / "mobilenetv2_035_96.keras", str(made / "mobilenetv2_calib.npy"), build="mobilenetv2"),
    }  # fmt: skip


# --- the code being measured ---------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def source_tree(rev: str | None, work: Path) -> tuple[Path, str]:
    """Where ``exporter`` is imported from, and a line saying which code that is.

    ``--rev`` measures a commit (``git archive`` into the work folder), so a baseline can be taken while
    the working tree is being edited; otherwise the working tree, with its uncommitted changes named.
    """
    if rev:
        commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
        dest = work / f"src-{commit[:12]}"
        if not (dest / "exporter").is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        subject = git("log", "-1", "--format=%s", commit)[:90]
        return dest, f"commit {commit[:12]} ({subject}...), from `git archive` (exactly the committed files)"
    commit = git("rev-parse", "HEAD")
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "exporter").splitlines()]
    state = f"with uncommitted changes in {len(dirty)} exporter/ files" if dirty else "exporter/ clean"
    return ROOT, f"working tree at commit {commit[:12]}, {state}"


def child_env(source: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(source), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path, PYTHONUNBUFFERED="1")


def edgeport_cmd() -> list[str]:
    script = Path(sys.executable).with_name("edgeport")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "exporter"]


# --- the jobs ------------------------------------------------------------------------------------------


@dataclass
class Job:
    label: str  # "vww export cortex-m4", "tf import", "make demo export", ...
    model: str
    what: str  # "tf_import", "hand", "cortex-m4", "android-arm64", "all", "make-demo"
    cmd: list[str]
    out: Path | None = None


def plan(models: list[Model], targets: tuple[str, ...], work: Path, run: int, *, timing: bool, demo_cli: bool,
         hand: str) -> list[Job]:  # fmt: skip
    """One repetition's jobs in a fixed order (runs alternate, so a drift of the machine spreads over all rows)."""
    child = [sys.executable, str(BENCH / "_speed_child.py")]
    base = work / "runs" / f"r{run}"
    jobs = [Job("tf import", "", "tf_import", [*child, json.dumps({"kind": "tf_import"})])] if timing else []
    for m in models:
        if timing:
            out = base / m.key / "hand" / "model_int8.tflite"
            spec = {"kind": "hand", "model": str(m.model), "calib_npy": str(calib_npy(work, m)), "out": str(out),
                    "hand": hand}  # fmt: skip
            jobs.append(Job(f"{m.key} hand", m.key, "hand", [*child, json.dumps(spec)], out.parent))
        for target in targets:
            out = base / m.key / target
            spec = {"kind": "export", "model": str(m.model), "target": target, "calib": m.calib,
                    "out": str(out), "options": m.options}  # fmt: skip
            jobs.append(Job(f"{m.key} export {target}", m.key, target, [*child, json.dumps(spec)], out))
    if demo_cli and any(m.key == "demo" for m in models):
        out = base / "demo" / "make-demo"
        npz = DEMO / "digits_calib.npz"
        cmd = [*edgeport_cmd(), "export", str(DEMO / "digits_cnn.keras"), "--target", "all", "--calib", f"{npz}:x",
               "--eval", f"{npz}:x,y", "--bench", "--bench-runs", "20", "-o", str(out)]  # fmt: skip
        jobs.append(Job("make demo export", "demo", "make-demo", cmd, out))
    return jobs


def calib_npy(work: Path, m: Model) -> Path:
    return work / "models" / f"{m.key}_calib_used.npy"


def prepare(models: list[Model], work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Train the demo model if missing (as `make demo` does), build the others' inputs: untimed."""
    if any(m.key == "demo" for m in models) and not (DEMO / "digits_cnn.keras").is_file():
        print("[speed] training the demo model (scripts/train_demo_model.py) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_demo_model.py"), "--out-dir", str(DEMO)],
                       check=True, env=env)  # fmt: skip
    (work / "models").mkdir(parents=True, exist_ok=True)
    specs = {m.key: {"model": str(m.model), "calib": m.calib, "options": m.options, "build": m.build,
                     "source": m.source, "calib_npy": str(calib_npy(work, m))} for m in models}  # fmt: skip
    job = {"kind": "prepare", "models": specs, "scripts": str(ROOT / "scripts")}
    run = run_tree([sys.executable, str(BENCH / "_speed_child.py"), json.dumps(job)], work / "logs" / "prepare.log",
                   env, cwd=work, timeout=1800)  # fmt: skip
    if run.exit != 0 or not run.result:
        tail = Path(run.log).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"speed: preparing the models failed (exit {run.exit}):\n" + "\n".join(tail))
    return run.result["prepared"]


def measure(job: Job, work: Path, env: dict[str, str], source: Path, run: int, timeout: float) -> dict[str, Any]:
    load = os.getloadavg()[0]
    slug = re.sub(r"\W+", "_", job.label)
    tree = run_tree(job.cmd, work / "logs" / f"r{run}_{slug}.log", env, cwd=work, timeout=timeout)
    row = {"label": job.label, "model": job.model, "what": job.what, "run": run, "load1_before": load,
           **tree.to_dict()}  # fmt: skip
    if job.out is not None and job.what not in ("hand",) and job.out.is_dir():
        row["hashes"] = output_hashes(job.out, run_paths(job.out, work, source), reports=job.what != "make-demo")
    imported = (tree.result or {}).get("exporter_from")
    if imported and not Path(imported).is_relative_to(source):
        raise SystemExit(f"speed: {job.label} imported exporter from {imported}, not from the code measured ({source})")
    if tree.exit != 0:
        tail = Path(tree.log).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        row["error"] = " | ".join(tail)
    mark = "" if tree.exit == 0 else f" EXIT {tree.exit}: {row.get('error', '')}"
    work_s = (tree.result or {}).get("work", {}).get("wall_s")
    print(f"[speed] run {run + 1} {job.label}: {tree.wall_s:.1f} s wall"
          + (f" (work {work_s:.1f} s)" if work_s is not None else "")
          + f", {tree.cpu_s:.1f} s CPU, {tree.peak_rss / 1024**3:.2f} GB{mark}", file=sys.stderr, flush=True)  # fmt: skip
    return row


# --- the record ------------------------------------------------------------------------------------------


def fingerprints(models: list[Model]) -> dict[str, dict[str, str]]:
    return {m.key: {"model": input_fingerprint(m.model), "calib": input_fingerprint(m.calib_path())} for m in models}


def record(path: Path, rows: list[dict[str, Any]], inputs: dict[str, Any], about: dict[str, Any],
           stats: dict[str, Any] | None, previous: dict[str, Any] | None) -> None:  # fmt: skip
    """Write the hashes file: this run's exports (replacing the same keys), inputs, and its timings as baseline."""
    from exporter.atomic import write_text

    data = dict(previous or {})
    data["about"] = ("Written by benchmarks/speed.py (--record, or when absent): sha256 of every file each export "
                     "wrote (reports after removing timings and run paths: normalized; .onnx also canonical, "
                     "constants named by content and sorted; 'variants': other hashes the recording run's own repetitions "
                     "wrote), the inputs' fingerprints, and the recording run's timings that later runs' targets "
                     "compare against.")  # fmt: skip
    data["recorded"] = about
    data["inputs"] = {**data.get("inputs", {}), **inputs}
    data["exports"] = dict(sorted({**data.get("exports", {}), **record_exports(rows)}.items()))
    if stats is not None:
        data["baseline"] = {label: {k: s[k] for k in ("wall_s", "work_wall_s", "cpu_s", "peak_rss")}
                            for label, s in stats.items()}  # fmt: skip
    write_text(path, json.dumps(data, indent=1) + "\n")


def run_paths(out: Path, work: Path, source: Path) -> dict[str, str]:
    """This run's absolute paths that reports quote (output, work folder, package measured, assets): placeholders."""
    paths = {str(out): "<out>", str(work): "<work>", str(ASSETS): "<assets>", str(ROOT): "<root>"}
    return {**paths, str(source / "exporter"): "<exporter>"}  # the package measured: a --rev snapshot or the tree


def rehash(rows: list[dict[str, Any]], work: Path, source: Path) -> None:
    """Fingerprint a kept run's outputs again (``--render``): a better fingerprint applies to old runs too."""
    for row in rows:
        out = work / "runs" / f"r{row['run']}" / row["model"] / row["what"]
        if "hashes" in row and out.is_dir():
            row["hashes"] = output_hashes(out, run_paths(out, work, source), reports=row["what"] != "make-demo")


# --- statistics ------------------------------------------------------------------------------------------


def stats_by_label(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """min and median of each measure over the repetitions of each row (failed runs left out, counted)."""
    out: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        runs = [r for r in rows if r["label"] == label]
        good = [r for r in runs if r["exit"] == 0 or (r["what"] in TARGETS + ("make-demo",) and r["exit"] == 3)]
        res = [r.get("result") or {} for r in good]
        series = {
            "wall_s": [r["wall_s"] for r in good],
            "cpu_s": [r["cpu_s"] for r in good],
            "peak_rss": [r["peak_rss"] for r in good],
            "import_wall_s": [x["import"]["wall_s"] for x in res if "import" in x],
            "import_cpu_s": [x["import"]["cpu_s"] for x in res if "import" in x],
            "work_wall_s": [x["work"]["wall_s"] for x in res if "work" in x],
            "work_cpu_s": [x["work"]["cpu_s"] for x in res if "work" in x],
        }
        entry = {k: {"min": min(v), "median": statistics.median(v), "n": len(v)} if v else None
                 for k, v in series.items()}  # fmt: skip
        entry.update(label=label, model=runs[0]["model"], what=runs[0]["what"], runs=len(runs), failed=len(runs) - len(good),
                     errors=sorted({r.get("error", "") for r in runs if r.get("error")}),
                     verdicts=(res[0].get("result") or {}).get("verdicts") if res else None,
                     exits=sorted({r["exit"] for r in runs}), stragglers=sum(r["stragglers"] for r in runs),
                     children_left=max((x.get("children_left", 0) for x in res), default=0))  # fmt: skip
        out[label] = entry
    return out


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma list of models (default: all of {', '.join(all_models(Path()))})")
    parser.add_argument("--runs", type=int, help="repetitions of every measurement (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"1 run of {', '.join(QUICK_MODELS)} only")
    parser.add_argument("--targets", default=",".join(TARGETS), help="export targets to time (default: %(default)s)")
    parser.add_argument("--no-demo-cli", action="store_true", help="leave out the `make demo` export command")
    parser.add_argument("--hand", choices=("keras", "saved_model"), default="keras",
                        help="hand conversion from_keras_model (default) or via a static SavedModel")  # fmt: skip
    parser.add_argument("--rev", help="measure this git revision's exporter/ (git archive) instead of the tree")
    parser.add_argument("--check-identical", action="store_true",
                        help=f"only export ({', '.join(CHECK_MODELS)} unless --only) and compare the written files "
                        "with --hashes; exit 1 if a model file differs")  # fmt: skip
    parser.add_argument("--hashes", type=Path, default=HASHES, help="recorded hashes (default: %(default)s)")
    parser.add_argument("--record", action="store_true", help="(re)write --hashes from this run")
    parser.add_argument("--note", default="", help="a line for the results file's header (e.g. what is measured)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="kill a measurement after this many seconds")
    parser.add_argument("--work", type=Path, help="keep models, outputs, logs and speed.json here")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    parser.add_argument("--render", type=Path, metavar="SPEED_JSON",
                        help="only re-render (and with --record re-record) a kept run's WORK/speed.json")  # fmt: skip
    args = parser.parse_args(argv)
    stored = json.loads(args.hashes.read_text(encoding="utf-8")) if args.hashes.is_file() else None
    if args.render:
        raw = json.loads(args.render.read_text(encoding="utf-8"))
        work = args.render.resolve().parent
        rehash(raw["rows"], work, Path(raw.get("source", ROOT)))
        raw["note"] = args.note or raw.get("note", "")
        return finish(raw, args, work, raw.get("stored"), stored, write_record=args.record)
    default_models = CHECK_MODELS if args.check_identical else QUICK_MODELS if args.quick else tuple(all_models(Path()))
    names = args.only.split(",") if args.only else list(default_models)
    runs = args.runs or (1 if args.quick or args.check_identical else 3)
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = [n for n in names if n not in all_models(Path())]
    if unknown or runs < 1:
        parser.error(f"unknown models {unknown}" if unknown else "--runs must be at least 1")
    if any(n in ("vww", "ad") for n in names) and not MLPERF.is_dir():
        print(f"speed: MLPerf Tiny assets not found under {ASSETS}; pass --only demo,mnv2", file=sys.stderr)
        return 2
    from _speed_report import source_version

    command = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started, t0, loads = datetime.datetime.now().astimezone(), time.perf_counter(), [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="edgeport-speed-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        if args.work and (work / "runs").exists():
            shutil.rmtree(work / "runs")  # outputs of an earlier run in a kept folder would be hashed as this one's
        source, source_line = source_tree(args.rev, work)
        env = child_env(source)
        models = [all_models(work)[n] for n in names]
        prepared = prepare(models, work, env)
        rows: list[dict[str, Any]] = []
        for run in range(runs):
            jobs = plan(models, targets, work, run, timing=not args.check_identical,
                        demo_cli=not (args.no_demo_cli or args.check_identical), hand=args.hand)  # fmt: skip
            for job in jobs:
                rows.append(measure(job, work, env, source, run, args.timeout))
                loads.append(os.getloadavg())
        about = {"date": started.strftime("%Y-%m-%d %H:%M %Z"), "code": source_line, "command": command.strip(),
                 "edgeport_version": source_version(source), "hashes": _rel(args.hashes)}  # fmt: skip
        raw = {"about": about, "names": names, "inputs": fingerprints(models), "prepared": prepared, "rows": rows,
               "loads": loads, "total_s": time.perf_counter() - t0, "runs": runs, "note": args.note,
               "hand": args.hand, "check_only": args.check_identical, "stored": stored, "source": str(source)}  # fmt: skip
        return finish(raw, args, work, stored, stored, write_record=args.record or stored is None)


def finish(raw: dict[str, Any], args: argparse.Namespace, work: Path, stored: dict[str, Any] | None,
           previous: dict[str, Any] | None, *, write_record: bool) -> int:  # fmt: skip
    """Statistics, identity against ``stored``, the record (merged into ``previous``), speed.json, the results."""
    from _speed_report import render

    from exporter.atomic import write_text

    rows, check_only = raw["rows"], raw.get("check_only", False)
    models = [all_models(work)[n] for n in raw["names"]]
    stats = stats_by_label(rows)
    ident = identity(rows, stored, raw["inputs"])
    if write_record:
        record(args.hashes, rows, raw["inputs"], raw["about"], None if check_only else stats, previous)
        print(f"[speed] recorded {args.hashes}", file=sys.stderr)
    (work / "speed.json").write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    text = render(stats, ident, stored, prepared=raw["prepared"], models=models, about=raw["about"],
                  loads=raw["loads"], total_s=raw["total_s"], runs=raw["runs"], note=raw["note"], hand=raw["hand"],
                  check_only=check_only)  # fmt: skip
    print(text)
    if not check_only:
        write_text(args.output, text)
        print(f"[speed] wrote {args.output}", file=sys.stderr)
    return 0 if identity_ok(ident) and not any(s["failed"] for s in stats.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
