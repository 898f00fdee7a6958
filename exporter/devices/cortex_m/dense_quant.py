"""Per-channel or per-tensor Dense (FULLY_CONNECTED) weights for a microcontroller: a measured choice.

Per-channel quantization stores a float32 scale and an int64 zero point per output unit of every
per-channel tensor, and TFLite Micro keeps a per-channel multiplier and shift in the arena: MLPerf
Tiny's AD autoencoder is about 40 KB larger per-channel (318 KB vs the reference's 277 KB per-tensor,
same ops). Per-tensor Dense is worth it when it costs nothing measurable, defined here as:

    on the same fidelity samples, for every output, the per-tensor model's top-1 agreement with the
    float model is not lower than the per-channel model's (classification outputs), and its output
    SNR against the float model is within ``SNR_TOLERANCE_DB`` (1 dB) of the per-channel model's.

Both models run on the same inputs through the same LiteRT kernels, so the comparison has no run-to-run
noise; 1 dB (26% more error power) is the chosen tolerance, a policy rather than a measured constant.
For MLPerf Tiny AD the rule keeps per-channel: per-tensor is 9.8 dB lower, and it shows in the task
metric (anomaly score 5.4% above float instead of 0.3%), although it still beats the reference model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SNR_TOLERANCE_DB = 1.0
MODES = ("auto", "per-channel", "per-tensor")
RULE = (
    "per-tensor Dense when, on the same fidelity samples and for every output, its top-1 agreement with the "
    f"float model is not lower and its output SNR is within {SNR_TOLERANCE_DB:g} dB of the per-channel model's "
    "(tried when it would save at least 1,024 B)"
)


@dataclass(frozen=True)
class Candidate:
    scheme: str  # "per-channel" | "per-tensor"
    model_bytes: int
    fidelity: dict[str, Any] | None

    def outputs(self) -> list[dict[str, Any]]:
        return list((self.fidelity or {}).get("outputs") or [])

    def to_dict(self) -> dict[str, Any]:
        summary = [
            {"name": o.get("name"), "top1_agreement": o.get("top1_agreement"), "snr_db": o.get("snr_db")}
            for o in self.outputs()
        ]
        return {"scheme": self.scheme, "model_bytes": self.model_bytes, "fidelity": summary}


def _snr(value: Any) -> float:
    return math.inf if value is None else float(value)  # None is how the report spells "identical" (inf)


def no_measurable_loss(per_channel: Candidate, per_tensor: Candidate) -> tuple[bool, str]:
    """The rule above, with the numbers that decided it."""
    pc, pt = per_channel.outputs(), per_tensor.outputs()
    if not pc or len(pc) != len(pt):
        return False, "no fidelity measurement to compare (needs calibration or evaluation data)"
    for a, b in zip(pc, pt, strict=True):
        name = a.get("name")
        ta, tb = a.get("top1_agreement"), b.get("top1_agreement")
        if ta is not None and tb is not None and tb < ta:
            return False, f"output {name}: top-1 agreement {tb:.1%} per-tensor < {ta:.1%} per-channel"
        sa, sb = _snr(a.get("snr_db")), _snr(b.get("snr_db"))
        if sb < sa - SNR_TOLERANCE_DB:
            return False, (
                f"output {name}: SNR {sb:.1f} dB per-tensor vs {sa:.1f} dB per-channel "
                f"({sa - sb:.1f} dB lower, more than {SNR_TOLERANCE_DB:g} dB)"
            )
    worst = min(_snr(b.get("snr_db")) - _snr(a.get("snr_db")) for a, b in zip(pc, pt, strict=True))
    return True, f"SNR change {worst:+.1f} dB at worst, top-1 agreement not lower"


@dataclass(frozen=True)
class DenseQuantChoice:
    mode: str  # what the user asked for
    chosen: str
    reason: str
    per_channel: Candidate | None
    per_tensor: Candidate | None
    auto_would_choose: str | None

    @property
    def bytes_saved(self) -> int | None:
        if self.per_channel is None or self.per_tensor is None:
            return None
        return self.per_channel.model_bytes - self.per_tensor.model_bytes

    def describe(self) -> str:
        saved = self.bytes_saved
        what = f"Dense layers {self.chosen} ({self.reason})"
        if saved is not None:
            what += f"; per-tensor is {saved:,} B smaller than per-channel"
        return what

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "chosen": self.chosen,
            "reason": self.reason,
            "rule": RULE,
            "auto_would_choose": self.auto_would_choose,
            "bytes_saved_by_per_tensor": self.bytes_saved,
            "candidates": [c.to_dict() for c in (self.per_channel, self.per_tensor) if c is not None],
            "sizes_method": "measured: .tflite bytes before MCU name compaction",
        }


def decide(mode: str, per_channel: Candidate, per_tensor: Candidate | None) -> DenseQuantChoice:
    """Apply ``mode`` (auto | per-channel | per-tensor) given both candidates (per_tensor None: no Dense to change)."""
    if per_tensor is None:
        return DenseQuantChoice(
            mode, "per-channel", "no per-channel Dense weights in the model", per_channel, None, None
        )
    ok, detail = no_measurable_loss(per_channel, per_tensor)
    auto = "per-tensor" if ok else "per-channel"
    if mode == "auto":
        reason = f"auto: {'no measurable loss' if ok else 'measurable loss'}: {detail}"
        return DenseQuantChoice(mode, auto, reason, per_channel, per_tensor, auto)
    return DenseQuantChoice(
        mode, mode, f"--dense-quant {mode}; the rule would choose {auto} ({detail})", per_channel, per_tensor, auto
    )


#: ``auto`` does not convert a second time to save less flash than this (VWW's 256->2 classifier: 16 B).
MIN_SAVING_BYTES = 1024


def per_channel_dense_bytes(graph: Any) -> int:
    """Estimated quantization metadata of per-channel FULLY_CONNECTED weights and biases: 12 B per channel
    (float32 scale + int64 zero point), the part per-tensor Dense removes. 0: nothing to change."""
    total = 0
    for op in graph.ops:
        if op.name == "FULLY_CONNECTED":
            for tensor in graph.op_inputs(op)[1:]:
                if tensor.is_constant and len(tensor.scale) > 1:
                    total += 12 * len(tensor.scale)
    return total


def not_tried(per_channel: Candidate, saving: int, flash_budget: int | None = None) -> DenseQuantChoice:
    """Per-channel without converting per-tensor: it would save too little, or (``flash_budget``) the model
    is so far over the flash budget that per-tensor could not fit either, so it cannot change the verdict."""
    if flash_budget is not None:
        reason = (
            f"auto: per-tensor Dense not converted: the per-channel model ({per_channel.model_bytes:,} B) is over "
            f"the {flash_budget:,} B flash budget by more than the ~{saving:,} B per-tensor would save"
        )
        return DenseQuantChoice("auto", "per-channel", reason, per_channel, None, None)
    reason = (
        f"auto: per-tensor Dense not converted: it would save about {saving:,} B, "
        f"less than the {MIN_SAVING_BYTES:,} B worth a second conversion"
    )
    return DenseQuantChoice("auto", "per-channel", reason, per_channel, None, None)
