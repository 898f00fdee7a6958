"""What the calibrate stage hands to the converter and the report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CalibrationSet:
    """Representative samples, validated against the model's inputs.

    ``arrays[i]`` holds the samples for model input ``i``, shape ``(N, *input_shape[1:])``, float32,
    already preprocessed exactly as the model expects them.
    """

    arrays: list[np.ndarray]
    source: str  # what the user passed, e.g. "calib.npz:x" or "images/ (2 files)" or "synthetic"
    kind: str  # "npy" | "npz" | "images" | "module" | "synthetic"
    representative: bool  # False for --calib synthetic
    indices: list[int]  # which samples of the source were selected (seeded subset)
    available: int  # how many samples the source held
    seed: int
    value_ranges: list[tuple[float, float]]  # per input (min, max) over the selected samples
    labels: np.ndarray | None = None  # when the source carries labels (eval later)
    preprocessing: str = ""  # e.g. "resized to 96x96, scaled to 0..1"
    warnings: list[str] = field(default_factory=list)
    classes: list[str] | None = None  # class names for labels from class sub-folders / labels.txt names
    #: Per input, the value range the preprocessing guarantees (image pixels 0..255 mapped through the
    #: scaling), or None when only the observed values are known. The converter pins the input
    #: quantization to it, so firmware can quantize pixels exactly (0..1 -> scale 1/255, zero point -128).
    declared_ranges: list[tuple[float, float]] | None = None
    #: "calibration" or "evaluation": the same loader serves both, the report says which is which.
    role: str = "calibration"

    def set_role(self, role: str) -> None:
        """Mark the set as "evaluation" data: the same loader read it, but its sample-count warning is
        about how coarse the accuracy figures are, not about quantization ranges."""
        from .validate import few_samples_warning

        before, after = few_samples_warning(self.count, self.role), few_samples_warning(self.count, role)
        self.role = role
        if before is not None and before in self.warnings:
            self.warnings[self.warnings.index(before)] = after or before

    @property
    def count(self) -> int:
        return int(self.arrays[0].shape[0]) if self.arrays else 0

    def batches(self):
        """Yield one batch-1 sample list per sample: the converter's representative_dataset."""
        for i in range(self.count):
            yield [a[i : i + 1].astype(np.float32) for a in self.arrays]

    def to_dict(self) -> dict:
        return {
            "role": self.role,
            "source": self.source,
            "kind": self.kind,
            "representative": self.representative,
            "samples": self.count,
            "available": self.available,
            "seed": self.seed,
            "indices": self.indices,
            "value_ranges": [list(r) for r in self.value_ranges],
            "preprocessing": self.preprocessing,
            "warnings": list(self.warnings),
            "declared_ranges": [list(r) for r in self.declared_ranges] if self.declared_ranges else None,
            "labels": self.labels is not None,
            **({"classes": list(self.classes)} if self.classes else {}),
        }
