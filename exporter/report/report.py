"""Reports are objects: counts, named reasons, ``to_dict()`` for machines; report.md is rendered from them by
:mod:`exporter.report.markdown`, report.html by :mod:`exporter.report.html`.

Every number says how it was obtained (``measured`` on the host, ``estimate`` from the graph, or
``device``), because a firmware engineer decides what to flash from these numbers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

#: Bumped when a key is renamed or removed (adding keys keeps the version). Documented in README.
SCHEMA_VERSION = 1

VERDICT_OK = "ok"
VERDICT_NOT_SUPPORTED = "not supported"
VERDICT_FORCED = "written with --force"


#: One-line notes in a report's ``conversion`` section, in the order reports show them.
CONVERSION_NOTES = (
    "qat",
    "clustering",
    "clustering_buys",
    "compaction",
    "zero_points",
    "lut",
    "vela_clustering",
    "gzip",
)


@dataclass
class Artifact:
    """A file edgeport wrote (or kept because it was unchanged)."""

    name: str
    path: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class FitCheck:
    """One memory budget: what the model needs against what the target allows."""

    resource: str  # "flash" | "ram" | "param_cache"
    needed_bytes: int
    budget_bytes: int | None
    method: str  # how needed_bytes was obtained

    @property
    def fits(self) -> bool:
        return self.budget_bytes is None or self.needed_bytes <= self.budget_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "needed_bytes": self.needed_bytes,
            "budget_bytes": self.budget_bytes,
            "fits": self.fits,
            "method": self.method,
        }


@dataclass
class TargetReport:
    """Everything edgeport knows about one model on one target."""

    target: str
    profile: dict[str, Any]
    verdict: str
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    conversion: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    fit: list[FitCheck] = field(default_factory=list)
    fidelity: dict[str, Any] | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    output_dir: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict == VERDICT_OK

    @property
    def model_bytes(self) -> int | None:
        return self.memory.get("model_bytes")

    def to_dict(self, common: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        data.update(common or {})
        data.update(
            {
                "target": self.target,
                "verdict": self.verdict,
                "reasons": self.reasons,
                "warnings": all_warnings(self, common),
                "conversion": self.conversion,
                "verification": self.verification,
                "memory": self.memory,
                "fit": [f.to_dict() for f in self.fit],
                "fidelity": self.fidelity,
                "artifacts": [a.to_dict() for a in self.artifacts],
                "profile": self.profile,
            }
        )
        data.update(self.extra)
        return data

    def to_json(self, common: dict[str, Any] | None = None) -> str:
        return dumps(self.to_dict(common))


def all_warnings(report: TargetReport, common: dict[str, Any] | None = None) -> list[str]:
    """The target's warnings, then those of its calibration and evaluation data not already among them.

    The analysis step copies the warnings of the data the fidelity was measured on; with ``--eval``
    that is the evaluation set, so the calibration set's (1 sample, an assumed 0..1 range) would be
    missing from report.json, report.md and the terminal without this.
    """
    out = list(dict.fromkeys(report.warnings))
    for key in ("calibration", "evaluation"):
        for warning in ((common or {}).get(key) or {}).get("warnings") or []:
            if warning not in out:
                out.append(warning)
    return out


def npu_caveat(report: TargetReport) -> str | None:
    """Why an Ethos-U target's "ok" does not mean the NPU was compiled for (Vela absent), else None."""
    section = report.extra.get("cortex_m")
    data = section.to_dict() if hasattr(section, "to_dict") else (section or {})
    if data.get("npu_compiled") is False and report.verdict != VERDICT_NOT_SUPPORTED:
        return "NPU not compiled (no Vela)"
    return None


_SCALAR_LIST = re.compile(r"\[(?:\s*(?:-?[0-9.eE+-]+|true|false|null|\"[^\"\n]*\"),?)+\s*\]")


def dumps(data: Any) -> str:
    """Indented JSON with lists of scalars kept on one line (shapes, indices), stable across runs.

    Non-finite floats become null: JSON has no NaN, and a report must always be written.
    """
    text = json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False)
    return _SCALAR_LIST.sub(lambda m: json.dumps(json.loads(m.group(0))), text) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "to_dict"):
        return _finite(value.to_dict())
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.2f} MiB"


def _how(method: str) -> str:
    """Short tag for the summary table: how a number was obtained."""
    if "arena" in method:
        return "TFLM arena"
    return "est." if method.startswith("estimate") else "file"


def render_summary(reports: list[TargetReport]) -> str:
    """The table printed after an export: one row per target."""
    header = ("target", "size", "ops supported", "fully int8", "RAM", "flash", "verdict")
    rows = []
    for r in reports:
        ver = r.verification or {}
        ops = ver.get("ops", {})
        supported = sum(1 for o in ops.values() if o["supported"])
        fit = {f.resource: f for f in r.fit}
        ram = fit.get("ram")
        flash = fit.get("flash")
        rows.append(
            (
                r.target,
                human_bytes(r.model_bytes),
                f"{supported}/{len(ops)}" if ops else "-",
                ("yes" if ver.get("fully_integer") else "no") if ver else "-",
                f"{human_bytes(ram.needed_bytes)} ({_how(ram.method)})" if ram else "-",
                f"{human_bytes(flash.needed_bytes)} ({_how(flash.method)})" if flash else "-",
                r.verdict + (f", {npu_caveat(r)}" if npu_caveat(r) else ""),
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*row) for row in rows]
    return "\n".join(out)
