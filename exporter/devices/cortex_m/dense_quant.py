"""Per-channel or per-tensor Dense (FULLY_CONNECTED) weights for a microcontroller: a measured choice.

Per-channel quantization costs flash and RAM: a float32 scale and an int64 zero point per output unit
of every per-channel tensor in the file, and TFLite Micro's per-channel kernels keep an int32 multiplier
and shift per output channel in the arena's persistent section. On MLPerf Tiny's AD autoencoder (10
Dense layers) that is 39,824 B of flash and 17,408 B of arena (22,040 B vs 4,632 B): the arena is
4.8x the per-tensor one. So ``--dense-quant auto`` measures both candidates (TFLite Micro's arena of
the bytes as written, the file as written, fidelity against the float model on the same checked
samples) and applies :data:`RULE`:

1. **budgets**: a candidate fits when its flash (file + estimated kernel code) and RAM (arena with the
   ``--arena-margin`` as ``MODEL_ARENA_SIZE`` + I/O buffers) are within the target's budgets, the fit
   check's own figures. If only one fits, it is chosen; if neither, the smaller (the fit check then
   refuses the export and says by how much).
2. **fidelity**: per-tensor is chosen when it is smaller (arena + file) and, for every output, its
   top-1 agreement with the float model is not lower than per-channel's and its SNR is within
   ``SNR_TOLERANCE_DB`` (1 dB) of per-channel's, or, when it makes the arena or the file at least
   ``MATERIAL_SAVING`` (10%) smaller, at least ``SNR_FLOOR_DB`` (30 dB);
3. otherwise per-channel.

Both candidates run through the same kernels on the same inputs, so the comparison has no noise. The
numbers are policy: 1 dB is 26% more error power, "no measurable loss"; 30 dB is an RMS error of 3.2%
of the output's RMS, an int8-grade result, worth taking when it buys a tenth of the RAM or flash. AD
measures 41.6 dB per-channel and 31.8 dB per-tensor, so auto takes per-tensor: arena 4,632 B, the
MLPerf reference's, and an anomaly score 5.4% above float (reference int8: 8.2%; per-channel: 0.3%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SNR_TOLERANCE_DB = 1.0
SNR_FLOOR_DB = 30.0
MATERIAL_SAVING = 0.10
MODES = ("auto", "per-channel", "per-tensor")
RULE = (
    "fit first: a candidate whose flash (file + kernel code) or RAM (arena + margin + I/O) is over the "
    "target's budget loses to one that fits; then per-tensor Dense when it is smaller (arena + file) and, "
    "on the same fidelity samples and for every output, its top-1 agreement with the float model is not "
    f"lower and its SNR is within {SNR_TOLERANCE_DB:g} dB of per-channel's or, when it makes the arena or "
    f"the file at least {MATERIAL_SAVING:.0%} smaller, at least {SNR_FLOOR_DB:g} dB; else per-channel "
    "(per-tensor tried when it would save at least 1,024 B)"
)


@dataclass(frozen=True)
class Candidate:
    """One conversion: its bytes as converted and as written, its TFLite Micro arena, its fidelity."""

    scheme: str  # "per-channel" | "per-tensor"
    model_bytes: int  # the converter's output (before the MCU name compaction)
    fidelity: dict[str, Any] | None
    file_bytes: int | None = None  # as written to flash (after the name compaction); None: not known
    arena_bytes: int | None = None  # TFLite Micro's measured arena; None: not measured (see arena_note)
    arena_note: str | None = None
    #: How the file and arena were measured: "as converted", or "LUT-compressed" (clustered weights, as they ship).
    form: str = "as converted"

    @property
    def flash_file(self) -> int:
        return self.model_bytes if self.file_bytes is None else self.file_bytes

    def outputs(self) -> list[dict[str, Any]]:
        return list((self.fidelity or {}).get("outputs") or [])

    def worst_snr(self) -> float | None:
        values = [_snr(o.get("snr_db")) for o in self.outputs()]
        return min(values) if values else None

    def summary(self) -> str:
        """``arena 4,632 B, file 275,688 B, SNR 31.8 dB``: what the rule compared."""
        parts = [f"arena {self.arena_bytes:,} B" if self.arena_bytes is not None else "arena not measured"]
        if self.form != "as converted":
            parts[0] = f"{self.form}: {parts[0]}"
        parts.append(f"file {self.flash_file:,} B")
        snr = self.worst_snr()
        if snr is not None:
            parts.append("SNR inf" if math.isinf(snr) else f"SNR {snr:.1f} dB")
        top1 = [o["top1_agreement"] for o in self.outputs() if o.get("top1_agreement") is not None]
        if top1:
            parts.append(f"top-1 agreement {min(top1):.1%}")
        if snr is None:
            parts.append("fidelity not measured")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        summary = [
            {"name": o.get("name"), "top1_agreement": o.get("top1_agreement"), "snr_db": o.get("snr_db")}
            for o in self.outputs()
        ]
        return {
            "scheme": self.scheme,
            "model_bytes": self.model_bytes,
            "file_bytes": self.file_bytes,
            "arena_bytes": self.arena_bytes,
            "arena_note": self.arena_note,
            "form": self.form,
            "fidelity": summary,
        }


@dataclass(frozen=True)
class Budgets:
    """The target's fit check, for a candidate: the same flash and RAM figures exporter.devices.cortex_m
    compares with the budgets (kernel code and I/O buffers are the same for both candidates)."""

    flash_budget: int | None
    ram_budget: int | None
    kernel_code_bytes: int
    io_bytes: int
    arena_margin: float

    def flash_needed(self, candidate: Candidate) -> int:
        return candidate.flash_file + self.kernel_code_bytes

    def ram_needed(self, candidate: Candidate) -> int | None:
        from .arena import with_margin

        if candidate.arena_bytes is None:
            return None
        return with_margin(candidate.arena_bytes, "", self.arena_margin).bytes + self.io_bytes

    def misses(self, candidate: Candidate) -> list[str]:
        """What is over budget, in the fit check's words ("RAM 30,000 B over the 20,000 B budget")."""
        out = []
        flash, ram = self.flash_needed(candidate), self.ram_needed(candidate)
        if self.flash_budget and flash > self.flash_budget:
            out.append(f"flash {flash:,} B over the {self.flash_budget:,} B budget")
        if self.ram_budget and ram is not None and ram > self.ram_budget:
            out.append(f"RAM {ram:,} B over the {self.ram_budget:,} B budget")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "flash_budget_bytes": self.flash_budget,
            "ram_budget_bytes": self.ram_budget,
            "kernel_code_bytes": self.kernel_code_bytes,
            "io_bytes": self.io_bytes,
            "arena_margin": self.arena_margin,
            "method": "the fit check's figures: flash = file + estimated kernel code; "
            "RAM = arena + margin (as MODEL_ARENA_SIZE) + I/O buffers",
        }


def _snr(value: Any) -> float:
    return math.inf if value is None else float(value)  # None is how the report spells "identical" (inf)


def _footprint(candidate: Candidate, both_arenas: bool) -> int:
    arena = (candidate.arena_bytes or 0) if both_arenas else 0
    return candidate.flash_file + arena


def _material(per_channel: Candidate, per_tensor: Candidate) -> str | None:
    """How per-tensor saves at least MATERIAL_SAVING of the arena or the file, or None."""
    savings = []
    if per_channel.arena_bytes and per_tensor.arena_bytes is not None:
        savings.append(("arena", 1 - per_tensor.arena_bytes / per_channel.arena_bytes))
    savings.append(("file", 1 - per_tensor.flash_file / per_channel.flash_file))
    what, best = max(savings, key=lambda s: s[1])
    return f"the {what} is {best:.0%} smaller" if best >= MATERIAL_SAVING else None


def fidelity_acceptable(per_channel: Candidate, per_tensor: Candidate, material: str | None) -> tuple[bool, str]:
    """Step 2 of the rule, with the numbers that decided it (``material``: see :func:`_material`)."""
    pc, pt = per_channel.outputs(), per_tensor.outputs()
    if not pc or len(pc) != len(pt):
        return False, "no fidelity measurement to compare (needs calibration or evaluation data)"
    floor_used = False
    for a, b in zip(pc, pt, strict=True):
        name = a.get("name")
        ta, tb = a.get("top1_agreement"), b.get("top1_agreement")
        if ta is not None and tb is not None and tb < ta:
            return False, f"output {name}: top-1 agreement {tb:.1%} per-tensor < {ta:.1%} per-channel"
        sa, sb = _snr(a.get("snr_db")), _snr(b.get("snr_db"))
        if sb >= sa - SNR_TOLERANCE_DB:
            continue
        loss = f"output {name}: SNR {sb:.1f} dB per-tensor vs {sa:.1f} dB per-channel ({sa - sb:.1f} dB lower"
        if material is None:
            return (
                False,
                f"{loss}, more than {SNR_TOLERANCE_DB:g} dB, and per-tensor saves less than {MATERIAL_SAVING:.0%})",
            )
        if sb < SNR_FLOOR_DB:
            return False, f"{loss}, and below the {SNR_FLOOR_DB:g} dB floor although {material})"
        floor_used = True
    if floor_used:
        worst = min(_snr(b.get("snr_db")) for b in pt)
        return (
            True,
            f"{material} and its SNR ({worst:.1f} dB at worst) is at least {SNR_FLOOR_DB:g} dB, top-1 agreement not lower",
        )
    worst = min(_snr(b.get("snr_db")) - _snr(a.get("snr_db")) for a, b in zip(pc, pt, strict=True))
    change = "0.0" if math.isnan(worst) else f"{worst:+.1f}"
    return True, f"no measurable loss: SNR change {change} dB at worst, top-1 agreement not lower"


def rule_choice(per_channel: Candidate, per_tensor: Candidate, budgets: Budgets | None) -> tuple[str, str]:
    """(scheme, why): the rule of the module docstring on two measured candidates."""
    both_arenas = per_channel.arena_bytes is not None and per_tensor.arena_bytes is not None
    smaller_pt = _footprint(per_tensor, both_arenas) < _footprint(per_channel, both_arenas)
    if budgets is not None:
        miss_pc, miss_pt = budgets.misses(per_channel), budgets.misses(per_tensor)
        if miss_pc and not miss_pt:
            return (
                "per-tensor",
                f"forced by the budget: per-channel does not fit ({'; '.join(miss_pc)}), per-tensor does",
            )
        if miss_pt and not miss_pc:
            return (
                "per-channel",
                f"forced by the budget: per-tensor does not fit ({'; '.join(miss_pt)}), per-channel does",
            )
        if miss_pc and miss_pt:
            smaller = "per-tensor" if smaller_pt else "per-channel"
            return smaller, f"neither fits the budget (per-channel: {'; '.join(miss_pc)}); the smaller is kept"
    if not smaller_pt:
        return "per-channel", "per-tensor is not smaller (arena + file)"
    ok, detail = fidelity_acceptable(per_channel, per_tensor, _material(per_channel, per_tensor))
    fits = "both fit the budgets; " if budgets is not None and (budgets.flash_budget or budgets.ram_budget) else ""
    return ("per-tensor" if ok else "per-channel"), fits + (detail if ok else f"fidelity loss: {detail}")


@dataclass(frozen=True)
class DenseQuantChoice:
    mode: str  # what the user asked for
    chosen: str
    reason: str
    per_channel: Candidate | None
    per_tensor: Candidate | None
    auto_would_choose: str | None
    budgets: Budgets | None = None

    @property
    def bytes_saved(self) -> int | None:
        if self.per_channel is None or self.per_tensor is None:
            return None
        return self.per_channel.model_bytes - self.per_tensor.model_bytes

    def describe(self) -> str:
        """The one line report.md and report.html show: the decision and both candidates' figures."""
        line = f"{self.chosen} ({self.reason})"
        if self.per_channel is not None and self.per_tensor is not None:  # else nothing was compared
            line += "".join(f"; {c.scheme}: {c.summary()}" for c in (self.per_channel, self.per_tensor))
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "chosen": self.chosen,
            "reason": self.reason,
            "summary": self.describe(),
            "rule": RULE,
            "auto_would_choose": self.auto_would_choose,
            "bytes_saved_by_per_tensor": self.bytes_saved,
            "candidates": [c.to_dict() for c in (self.per_channel, self.per_tensor) if c is not None],
            "budgets": self.budgets.to_dict() if self.budgets is not None else None,
            "sizes_method": "measured: model_bytes is the converter's .tflite, file_bytes the same after the MCU "
            "name compaction (what is written); arena_bytes is TFLite Micro's measured arena of file_bytes",
        }


def decide(
    mode: str, per_channel: Candidate, per_tensor: Candidate | None, budgets: Budgets | None = None
) -> DenseQuantChoice:
    """Apply ``mode`` (auto | per-channel | per-tensor) given both candidates (per_tensor None: no Dense to change)."""
    if per_tensor is None:
        return DenseQuantChoice(
            mode, "per-channel", "no per-channel Dense weights in the model", per_channel, None, None, budgets
        )
    auto, detail = rule_choice(per_channel, per_tensor, budgets)
    if mode == "auto":
        return DenseQuantChoice(mode, auto, f"auto: {detail}", per_channel, per_tensor, auto, budgets)
    reason = f"--dense-quant {mode}; the rule would choose {auto} ({detail})"
    return DenseQuantChoice(mode, mode, reason, per_channel, per_tensor, auto, budgets)


#: ``auto`` does not convert a second time to save less flash than this (VWW's 256->2 classifier: 16 B).
MIN_SAVING_BYTES = 1024


def per_channel_dense_bytes(graph: Any) -> int:
    """Estimated bytes per-tensor Dense saves on per-channel FULLY_CONNECTED weights and biases: 12 B per
    channel (a float32 scale and an int64 zero point in the file; where TFLite Micro shares the zero points,
    the scale plus the int32 multiplier and shift its kernel keeps in the arena). 0: nothing to change."""
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
