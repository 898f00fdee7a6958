"""``edgeport suggest``: what keeps a model off a target, and the architecture change that fixes it.

The advice comes from a real export to a scratch folder, so it rests on the same evidence as the
report: the verifier's findings (unsupported ops and float layers, already named by Keras layer and
with their remedy), the Edge TPU's predicted partition, the fit checks against the board's budgets and
the size of every layer. Nothing here re-derives what those stages measured; it turns their numbers
into the next design step: ReLU6 instead of GELU, a MobileNet-style width multiplier when weights do
not fit flash, a smaller input when activations do not fit RAM, low-rank or pruning for a layer that
holds most of the weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .atomic import scratch_dir

#: A layer holding at least this share of the weights is worth compressing on its own.
DOMINANT_SHARE = 0.25


@dataclass(frozen=True)
class Suggestion:
    """One thing to change: what blocks the target (``why``) and what to do (``what``)."""

    kind: str  # "op" | "float" | "flash" | "ram" | "edgetpu" | "size"
    where: str  # the Keras layer, or "model"
    why: str
    what: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Suggestions:
    target: str
    verdict: str
    items: list[Suggestion]
    evidence: str

    def render(self) -> str:
        head = f"{self.target}: {self.verdict} ({self.evidence})"
        if not self.items:
            return head + "\n  nothing blocks this target; no change needed."
        lines = [head]
        for i, item in enumerate(self.items, 1):
            lines.append(f"  {i}. [{item.kind}] {item.where}: {item.why}")
            lines.append(f"     -> {item.what}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "verdict": self.verdict,
            "evidence": self.evidence,
            "suggestions": [s.to_dict() for s in self.items],
        }


def suggest(model: str | Path, target: str, *, calib: str | None = None, **options: Any) -> list[Suggestions]:
    """Export ``model`` for ``target`` in a scratch folder and turn the reports into suggestions."""
    from .pipeline import export

    with scratch_dir("edgeport-suggest-") as work:
        result = export(
            model, target=target, calib=calib or "synthetic", output_dir=work / "out", force=True, **options
        )
    evidence = "from an export calibrated on " + (
        "your data" if calib else "synthetic data (ops and sizes are exact; accuracy is not judged)"
    )
    return [
        Suggestions(r.target, "fits and runs" if not r.reasons else "blocked", _from_report(r), evidence)
        for r in result.reports
    ]


def _from_report(report: Any) -> list[Suggestion]:
    items: list[Suggestion] = []
    for finding in report.verification.get("findings", []):
        if finding["severity"] != "error":
            continue
        kind = "float" if finding["code"].startswith("float") else "op"
        items.append(
            Suggestion(
                kind, finding.get("layer") or finding.get("op_name") or "model", finding["code"], finding["message"]
            )
        )
    tpu = report.extra.get("edgetpu")
    if tpu and not tpu.get("fully_mapped", True):
        for fix in tpu.get("fixes", []):
            items.append(
                Suggestion(
                    "edgetpu",
                    fix.get("layer") or fix.get("op", "model"),
                    f"{fix.get('op')} is not mapped to the Edge TPU",
                    fix.get("remedy", ""),
                )
            )
    for check in report.fit:
        if check.fits or check.budget_bytes is None or check.resource == "param_cache":
            continue
        ratio = check.budget_bytes / check.needed_bytes
        if check.resource == "flash":
            alpha = _round_down(math.sqrt(ratio) * 0.9)
            what = (
                f"weights scale with the square of the width: a MobileNet-style width multiplier of {alpha} "
                f"(e.g. `edgeport run` with a distill step and student width {alpha}) brings them to about "
                f"{alpha**2 * check.needed_bytes / 1024:.0f} KiB; pruning + clustering shrink only the compressed size"
            )
        else:
            side = _round_down(math.sqrt(ratio) * 0.9)
            what = (
                f"activations scale with the input area: an input {side}x smaller per side (e.g. 96x96 -> "
                f"{int(96 * side)}x{int(96 * side)}) or fewer channels in the early layers, where the largest tensors live"
            )
        items.append(
            Suggestion(
                check.resource,
                "model",
                f"needs {check.needed_bytes:,} B of {check.budget_bytes:,} B ({check.method})",
                what,
            )
        )
    for row in report.extra.get("size_by_layer", [])[:3]:
        if row.get("share", 0) >= DOMINANT_SHARE and row.get("layer") not in (None, "other"):
            technique = "--lowrank energy=0.9" if row.get("class") in ("Dense", "Conv2D") else "pruning"
            items.append(
                Suggestion(
                    "size",
                    row["layer"],
                    f"holds {100 * row['share']:.0f}% of the model ({row['bytes']:,} B, {row.get('class', '?')})",
                    f"compress this layer first: {technique}, or a narrower layer",
                )
            )
    return items


def _round_down(value: float) -> float:
    """To the width multipliers people use (1.0, 0.75, 0.5, 0.35, 0.25, 0.1)."""
    for step in (1.0, 0.75, 0.5, 0.35, 0.25, 0.1):
        if value >= step:
            return step
    return 0.1
