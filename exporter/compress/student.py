"""A student derived from the teacher by a MobileNet-style width multiplier.

Every Conv/Dense layer keeps its kind, kernel size, strides and activation but gets ``width`` times
the filters/units (at least 1); the layers that produce the model's outputs keep theirs, so teacher
and student stay interchangeable. Conv parameters scale roughly with width^2, so 0.5 gives a student
of about a quarter of the teacher. The student starts from fresh (seeded) weights: its knowledge
comes from distillation, not from slicing the teacher.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

_WIDTH_KEYS = {
    "Conv1D": "filters",
    "Conv2D": "filters",
    "Conv3D": "filters",
    "SeparableConv2D": "filters",
    "Dense": "units",
}


def output_layer_names(model: Any) -> set[str]:
    names = set()
    for tensor in model.outputs:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            names.add(history[0].name)
    return names


def scale_width(model: Any, width: float, *, seed: int = 0) -> Any:
    """A fresh model shaped like ``model`` with ``width`` x the filters/units of every hidden Conv/Dense."""
    import keras

    if not 0.0 < width <= 4.0:
        raise UsageError(f"--student-width must be in (0, 4]; received {width}.", hint="Pass 0.5 for about a quarter.")
    if getattr(model, "layers", None) and any(getattr(layer, "layers", None) for layer in model.layers):
        raise UsageError(
            "--student-width supports models without nested sub-models.",
            hint="Pass your own student with --student (any model with the teacher's inputs and outputs).",
        )
    keep = output_layer_names(model)
    keras.utils.set_random_seed(seed)
    changed = []

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        key = _WIDTH_KEYS.get(type(layer).__name__)
        if key and layer.name not in keep:
            config[key] = max(1, int(round(config[key] * width)))
            changed.append(layer.name)
        return layer.__class__.from_config(config)

    student = keras.models.clone_model(model, clone_function=clone)
    if not changed:
        raise UsageError("--student-width found no hidden Conv/Dense layer to narrow in this model.")
    return student
