"""The accuracy guard: refuse to ship an int8 model that lost more than the user allows.

When plain int8 falls short of ``--max-accuracy-drop`` (labelled evaluation data) or ``--min-agreement``
(any data), edgeport tries remedies in a fixed order, from the one that costs the device nothing to the
one that costs it most, and only those the target's runtime can execute:

1. more calibration samples (ranges from more data);
2. a different calibration choice (the legacy TOCO quantizer, which rounds and nudges ranges differently);
3. per-tensor weights where the worst layer is (Dense only when it is a Dense layer; the converter has
   no per-layer switch, so for other layers every layer goes per-tensor, and the report says so);
4. 16x8: int16 activations with int8 weights, where the target's kernels support it (not the Edge TPU);
5. float fallback for the worst layers (targets that may run float ops: android-arm64).

The first attempt that passes (and still verifies on the target) is kept; every attempt and its
measured result goes into the report. When none passes, the target's verdict is "not supported" with
the measured drop, and the export exits 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .convert.tflite import QuantizationConfig
from .errors import UsageError
from .profiles import TargetProfile


@dataclass(frozen=True)
class GuardSpec:
    """What the user allows: an accuracy drop in percentage points, or a minimum top-1 agreement in %."""

    max_accuracy_drop_pp: float | None = None
    min_agreement_pct: float | None = None

    def __post_init__(self) -> None:
        if self.max_accuracy_drop_pp is not None and self.max_accuracy_drop_pp < 0:
            raise UsageError(
                f"--max-accuracy-drop must be >= 0 percentage points; received {self.max_accuracy_drop_pp}."
            )
        if self.min_agreement_pct is not None and not 0 <= self.min_agreement_pct <= 100:
            raise UsageError(f"--min-agreement must be a percentage from 0 to 100; received {self.min_agreement_pct}.")

    @property
    def active(self) -> bool:
        return self.max_accuracy_drop_pp is not None or self.min_agreement_pct is not None

    @property
    def metric(self) -> str:
        return "accuracy drop (pp)" if self.max_accuracy_drop_pp is not None else "top-1 agreement (%)"

    def measure(self, fidelity: dict[str, Any] | None) -> float | None:
        """The guarded number from a fidelity report (drop in pp, or agreement in %).

        Every output counts: the drop is the labelled output's, the agreement the worst output's.
        """
        if not fidelity or not fidelity.get("outputs"):
            return None
        outputs = fidelity["outputs"]
        if self.max_accuracy_drop_pp is not None:
            return next((o["accuracy_drop_pp"] for o in outputs if o.get("accuracy_drop_pp") is not None), None)
        agreements = [o["top1_agreement"] for o in outputs if o.get("top1_agreement") is not None]
        return 100.0 * min(agreements) if agreements else None

    def passes(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.max_accuracy_drop_pp is not None:
            return value <= self.max_accuracy_drop_pp + 1e-9
        return value >= self.min_agreement_pct - 1e-9

    def describe(self) -> str:
        if self.max_accuracy_drop_pp is not None:
            return f"accuracy drop <= {self.max_accuracy_drop_pp:g} pp"
        return f"top-1 agreement >= {self.min_agreement_pct:g}%"


@dataclass
class Attempt:
    """One try: what was changed, what it measured, whether it passed."""

    name: str
    detail: str
    config: QuantizationConfig
    value: float | None = None
    passed: bool = False
    verified: bool = True
    kept: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "detail": self.detail,
            "scheme": self.config.describe(),
            "value": self.value,
            "passed": self.passed,
            "verified": self.verified,
            "kept": self.kept,
            "note": self.note,
        }


@dataclass
class GuardOutcome:
    spec: GuardSpec
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def kept(self) -> Attempt | None:
        return next((a for a in self.attempts if a.kept), None)

    @property
    def passed(self) -> bool:
        return self.kept is not None

    def best(self) -> Attempt | None:
        measured = [a for a in self.attempts if a.value is not None]
        if not measured:
            return None
        if self.spec.max_accuracy_drop_pp is not None:
            return min(measured, key=lambda a: a.value)
        return max(measured, key=lambda a: a.value)

    def failure_reason(self) -> str:
        first = self.attempts[0] if self.attempts else None
        best = self.best()
        plain = f"{first.value:.2f}" if first and first.value is not None else "unmeasured"
        tail = (
            f"; best was '{best.name}' at {best.value:.2f}"
            if best and best.value is not None and best is not first
            else ""
        )
        return (
            f"Accuracy guard failed: int8 {self.spec.metric} is {plain}, required {self.spec.describe()}; "
            f"{len(self.attempts) - 1} fallback(s) tried{tail}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requirement": self.spec.describe(),
            "metric": self.spec.metric,
            "passed": self.passed,
            "kept": self.kept.name if self.kept else None,
            "attempts": [a.to_dict() for a in self.attempts],
        }


@dataclass(frozen=True)
class WorstLayer:
    """The layer the per-layer error ranks worst, with the TFLite op outputs that belong to it."""

    layer: str
    layer_class: str
    tensors: tuple[str, ...]


def plan(
    profile: TargetProfile,
    base: QuantizationConfig,
    *,
    calib_count: int,
    calib_available: int,
    worst: Callable[[int], list[WorstLayer]],
) -> list[tuple[str, str, QuantizationConfig | None]]:
    """The fallbacks this target allows, in order; ``None`` config means "skipped" (detail says why)."""
    steps: list[tuple[str, str, QuantizationConfig | None]] = []
    more = min(calib_available, max(4 * calib_count, 500))
    if more > calib_count:
        steps.append(
            ("more calibration samples", f"{more} samples instead of {calib_count}", replace(base, calib_samples=more))
        )
    else:
        steps.append(
            ("more calibration samples", f"skipped: all {calib_available} available samples already used", None)
        )
    steps.append(("different calibration choice", "legacy (TOCO) quantizer", replace(base, legacy_quantizer=True)))
    worst_one = worst(1)
    if worst_one:
        layer = worst_one[0]
        if layer.layer_class == "Dense":
            detail = f"per-tensor weights for Dense layers (worst layer '{layer.layer}' is Dense)"
            steps.append(("per-tensor for the worst layer", detail, replace(base, per_tensor_dense=True)))
        else:
            detail = (
                f"per-tensor weights for every layer (worst layer '{layer.layer}' is {layer.layer_class}; "
                "the converter has no per-layer switch)"
            )
            steps.append(("per-tensor for the worst layer", detail, replace(base, per_channel=False)))
    else:
        steps.append(("per-tensor for the worst layer", "skipped: no per-layer error available", None))
    if profile.quantization.int16_activations:
        steps.append(
            (
                "16x8 (int16 activations)",
                "int16 activations, int8 weights, int16 I/O",
                replace(base, int16_activations=True),
            )
        )
    else:
        steps.append(("16x8 (int16 activations)", f"skipped: {profile.name} has no int16 kernels", None))
    if profile.quantization.float_ops_allowed:
        for count in (1, 3):
            layers = worst(count)
            if not layers or (count > 1 and len(layers) <= 1):
                continue
            nodes = tuple(t for layer in layers for t in layer.tensors)
            names = ", ".join(f"'{layer.layer}'" for layer in layers)
            steps.append(
                (f"float fallback ({len(layers)} layer(s))", f"keep {names} in float", replace(base, float_nodes=nodes))
            )
    else:
        steps.append(("float fallback", f"skipped: {profile.name} runs integer ops only", None))
    return steps


def run(
    spec: GuardSpec,
    profile: TargetProfile,
    base: QuantizationConfig,
    plain: tuple[float | None, bool],
    evaluate: Callable[[QuantizationConfig], tuple[float | None, bool, str]],
    steps: Callable[[], list[tuple[str, str, QuantizationConfig | None]]],
) -> GuardOutcome:
    """Record plain int8, then try each planned step until one passes and verifies."""
    outcome = GuardOutcome(spec)
    value, verified = plain
    first = Attempt("plain int8", "as converted", base, value, spec.passes(value) and verified, verified)
    outcome.attempts.append(first)
    if first.passed:
        first.kept = True
        return outcome
    for name, detail, config in steps():
        if config is None:
            outcome.attempts.append(Attempt(name, detail, base, None, False, False, note="skipped"))
            continue
        value, verified, note = evaluate(config)
        attempt = Attempt(name, detail, config, value, spec.passes(value) and verified, verified, note=note)
        outcome.attempts.append(attempt)
        if attempt.passed:
            attempt.kept = True
            break
    return outcome
