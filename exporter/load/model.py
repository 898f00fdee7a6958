"""What the load stage hands to the rest of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, static shape with batch 1, numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    #: SavedModel only: the graph tensor behind a signature key, without ":0" (e.g.
    #: "serving_default_input_1"). The compat.v1 converter keys ``input_shapes`` by this, not by ``name``.
    tensor_name: str | None = None


@dataclass
class SourceModel:
    """A loaded model, whatever file it came from.

    Exactly one of ``keras_model``, ``saved_model_dir`` and ``tflite_bytes`` is how the converter
    reaches the model: a Keras 3 model object (from .keras, .h5 or a loadable SavedModel), a SavedModel
    directory only the compat.v1 converter can read, or an existing .tflite to re-check.
    """

    path: Path
    format: str  # "keras" | "h5" | "saved_model" | "tflite"
    loader: str  # how it was read, for the report, e.g. "keras.saving.load_model(safe_mode=True)"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    keras_model: Any | None = None
    saved_model_dir: Path | None = None
    tflite_bytes: bytes | None = None
    #: Keras layer name -> layer class name, in model order (for naming layers in messages).
    layers: dict[str, str] = field(default_factory=dict)
    #: Warnings the user should see (compat fixes applied, safe mode lifted, ...).
    notes: list[str] = field(default_factory=list)
    #: Set by ``export --prune``: the pruning report (steps, accuracy), shown in every target's sparsity section.
    pruning: dict[str, Any] | None = None
    #: Float outputs already computed for a set of inputs (exporter.analyze.inference.keras_reference):
    #: the ONNX check and the TFLite fidelity ask for the same samples. Whoever changes ``keras_model``'s
    #: weights (pruning) clears it.
    reference_cache: dict[str, list[Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        """Stem used for the default output folder."""
        stem = self.path.name if self.path.is_dir() else self.path.stem
        return stem or "model"

    @property
    def is_tflite(self) -> bool:
        return self.tflite_bytes is not None
