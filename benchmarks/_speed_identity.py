"""Fingerprints of what an export wrote, and their comparison (for benchmarks/speed.py).

Issue #15 item 4: the written files must be byte-identical before and after, and the same across runs.
Model files (.tflite, .onnx, C arrays, model.mk, ...) are compared by their sha256. Reports hold
timings and absolute paths by design, so they are compared after :func:`normalize_report`. An .onnx
also gets a canonical hash (constants named after their content, deduplicated and sorted), so a file
whose bytes differ only in how tf2onnx named and ordered equal constants is told apart from one whose
graph or weights changed. The record keeps every
variant of a file its own repetitions produced: a file that was not deterministic in the record can
only be compared with those variants and by its canonical form.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

REPORT_NAMES = ("report.json", "report.md", "report.html")
_TIMING_KEY = re.compile(r"(^seconds$|_s$|_ms$|_us$)")
_SCRATCH = re.compile(r"/tmp/edgeport-[A-Za-z0-9_.-]+")
_TIME_TEXT = re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\s?(?:s|ms|us|µs)\b")
#: What compare() sorts files into; the first four fail identity, "reordered" fails unless the record varied.
FAILING = ("differ", "missing", "new")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _drop_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_timings(v) for k, v in value.items() if not _TIMING_KEY.search(k)}
    if isinstance(value, list):
        return [_drop_timings(v) for v in value]
    return value


def normalize_report(data: bytes, name: str, paths: dict[str, str]) -> bytes:
    """A report with what differs between two identical exports taken out: timings, scratch and run paths.

    ``paths`` maps an absolute path of this run (its output folder, work folder) to a placeholder.
    JSON loses every key named ``seconds`` or ending in ``_s``/``_ms``/``_us``; text reports have every
    "12.3 s"-like figure masked.
    """
    text = data.decode("utf-8", errors="replace")
    for path, placeholder in sorted(paths.items(), key=lambda item: -len(item[0])):
        text = text.replace(path, placeholder)
    text = _SCRATCH.sub("<scratch>", text)
    if name.endswith(".json"):
        try:
            return json.dumps(_drop_timings(json.loads(text)), sort_keys=True, indent=0).encode()
        except ValueError:
            return text.encode()
    return _TIME_TEXT.sub("<t>", text).encode()


def onnx_canonical_sha256(data: bytes) -> str | None:
    """sha256 of the ONNX model with every initializer named after its content, deduplicated, sorted.

    tf2onnx folds equal constants (the 0 and 6 of every ReLU6) into one whose surviving name depends on
    set order, and writes initializers in an order that can vary: two files equal here have the same
    nodes and the same constants, whatever their names and order.
    """
    try:
        import onnx

        model = onnx.load_from_string(data)
    except Exception:  # not loadable: the byte hash alone speaks for it
        return None
    graph, rename, unique = model.graph, {}, {}
    for tensor in graph.initializer:
        anonymous = onnx.TensorProto()
        anonymous.CopyFrom(tensor)
        anonymous.name = ""
        name = "const_" + sha256_bytes(anonymous.SerializeToString(deterministic=True))[:20]
        rename[tensor.name] = name
        anonymous.name = name
        unique[name] = anonymous
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    for value in (*graph.input, *graph.value_info):
        value.name = rename.get(value.name, value.name)
    del graph.initializer[:]
    graph.initializer.extend(unique[name] for name in sorted(unique))
    return sha256_bytes(model.SerializeToString(deterministic=True))


def output_hashes(folder: Path, paths: dict[str, str], *, reports: bool = True) -> dict[str, dict[str, Any]]:
    """relative path -> fingerprint of every file an export wrote under ``folder``.

    A report's ``sha256`` is of its normalized text (``normalized: true``; ``raw_sha256`` of its bytes).
    ``reports=False`` leaves reports out (an export with --bench writes latencies that differ every run).
    """
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if path.name in REPORT_NAMES:
            if reports:
                norm = normalize_report(data, path.name, paths)
                out[rel] = {"sha256": sha256_bytes(norm), "raw_sha256": sha256_bytes(data), "normalized": True}
            continue
        out[rel] = {"sha256": sha256_bytes(data), "bytes": len(data), "normalized": False}
        if path.suffix == ".onnx":
            out[rel]["canonical_sha256"] = onnx_canonical_sha256(data)
    return out


def input_fingerprint(path: Path) -> str:
    """sha256 of a model or calibration input, by content: a .keras archive without its save date.

    ``scripts/train_demo_model.py`` is seeded and trains bit-identical weights, but Keras writes the save
    time into the archive's metadata.json; a folder is hashed file by file in name order.
    """
    digest = hashlib.sha256()
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(item.relative_to(path).as_posix().encode() + b"\0" + item.read_bytes())
    elif path.suffix == ".keras":
        import zipfile

        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if name != "metadata.json":
                    digest.update(name.encode() + b"\0" + archive.read(name))
    else:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def compare(stored: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Sort every file into same / variant / reordered / differ / missing / new / reports_differ.

    ``variant``: equal to another variant the record's own repetitions wrote. ``reordered``: bytes differ,
    the canonical ONNX (constants named by content, sorted) is equal. ``unstable``: files the record saw more than one of.
    """
    out: dict[str, list[str]] = {
        k: [] for k in ("same", "variant", "reordered", "unstable", *FAILING, "reports_differ")
    }
    for rel in sorted(set(stored) | set(now)):
        old, new = stored.get(rel), now.get(rel)
        if old is None or new is None:
            out["new" if old is None else "missing"].append(rel)
            continue
        if old.get("variants"):
            out["unstable"].append(rel)
        if old["sha256"] == new["sha256"]:
            out["same"].append(rel)
        elif new["sha256"] in old.get("variants", []):
            out["variant"].append(rel)
        elif old.get("canonical_sha256") and old.get("canonical_sha256") == new.get("canonical_sha256"):
            out["reordered"].append(rel)
        else:
            out["reports_differ" if new.get("normalized") else "differ"].append(rel)
    return out


def failing(diff: dict[str, list[str]]) -> list[str]:
    """Files that break byte identity: changed, missing, new, or reordered where the record was stable."""
    return sorted(
        {*(f for k in FAILING for f in diff[k]), *(f for f in diff["reordered"] if f not in diff["unstable"])}
    )


def export_key(row: dict[str, Any]) -> str:
    return f"{row['model']}/{row['what']}"


def record_exports(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The record of each export: its first repetition's fingerprints, plus every other variant seen."""
    exports: dict[str, dict[str, dict[str, Any]]] = {}
    for row in sorted((r for r in rows if "hashes" in r), key=lambda r: r["run"]):
        files = exports.setdefault(export_key(row), {})
        for rel, entry in row["hashes"].items():
            if rel not in files:
                files[rel] = dict(entry)
            elif entry["sha256"] != files[rel]["sha256"] and entry["sha256"] not in files[rel].get("variants", []):
                files[rel].setdefault("variants", []).append(entry["sha256"])
    return dict(sorted(exports.items()))


def identity(rows: list[dict[str, Any]], stored: dict[str, Any] | None, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Per export (model/target): its files against the record, and against this run's first repetition."""
    out = []
    for key in sorted({export_key(r) for r in rows if "hashes" in r}):
        model = key.split("/")[0]
        runs = [r["hashes"] for r in sorted(rows, key=lambda r: r["run"]) if export_key(r) == key and "hashes" in r]
        entry: dict[str, Any] = {"key": key, "files": len(runs[0]), "runs": len(runs)}
        entry["across_runs"] = [compare(runs[0], h) for h in runs[1:]]
        if stored is None or key not in stored.get("exports", {}):
            entry["record"] = "not recorded"
        elif stored.get("inputs", {}).get(model) != inputs.get(model):
            entry["record"] = "inputs differ from the record's: not compared"
        else:
            entry["record"] = [compare(stored["exports"][key], h) for h in runs]
        out.append(entry)
    return out


def identity_ok(entries: list[dict[str, Any]]) -> bool:
    """No export broke byte identity against the record or across this run's repetitions."""
    for e in entries:
        diffs = e["across_runs"] + (e["record"] if isinstance(e["record"], list) else [])
        if any(failing(d) for d in diffs):
            return False
    return True
