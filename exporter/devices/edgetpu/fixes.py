"""How to make more of a model run on the Edge TPU: remedies per reason, and the ``--edgetpu-compat`` rewrite.

A remedy names the Keras layer behind the first CPU op when the model came from Keras, because that op
decides the partition: everything after it runs on the host CPU whatever else is fixed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...verify.checks import LAYER_REMEDIES, OP_REMEDIES
from ...verify.graph import TFLiteGraph

if TYPE_CHECKING:
    from .partition import EdgeTpuAnalysis, OpPlacement

#: Activations that convert to an op the Edge TPU does not map (GELU, HARD_SWISH). swish/silu converts
#: to LOGISTIC + MUL, which compiler 16 maps (yolov5n log: LOGISTIC x66, MUL x75 mapped), so it is left
#: alone unless asked for.
UNMAPPED_ACTIVATIONS = ("gelu", "hard_silu", "hard_swish")
SWISH_ACTIVATIONS = ("silu", "swish")

_IO_FIX = (
    "Export with int8 (or uint8) model inputs and outputs -- `edgeport export --io-dtype int8` -- and quantize "
    "inputs / dequantize outputs in the application with the tensors' scale and zero point."
)
_VERSION_GENERIC = (
    "No TFLite converter setting selects older op versions: the converter picks each op's version from the "
    "features it uses (TF 2.21 has no public or `_experimental_` flag for it). Remove the feature that raised "
    "the version, or run the model on the CPU ({float_target})."
)
_VERSION_FIXES = {
    "FULLY_CONNECTED": (
        "A Dense layer applied to a 3-D/4-D tensor converts with keep_num_dims=True, which raises every "
        "FULLY_CONNECTED of the model to version 5: add Flatten()/Reshape to 2-D before that Dense, or use a "
        "1x1 Conv2D instead."
    ),
    "RESIZE_NEAREST_NEIGHBOR": (
        "Keras Resizing / tf.image.resize convert with half_pixel_centers=True (version 3): resize with "
        "tf.raw_ops.ResizeNearestNeighbor(images=x, size=..., align_corners=False, half_pixel_centers=False) "
        "in a custom layer (what Ultralytics' --tf-raw-resize does for Edge TPU exports)."
    ),
    "RESIZE_BILINEAR": (
        "Keras Resizing / UpSampling2D(interpolation='bilinear') convert with half_pixel_centers=True (version 3): "
        "resize with tf.raw_ops.ResizeBilinear(images=x, size=..., align_corners=False, half_pixel_centers=False) "
        "in a custom layer, or use nearest-neighbour resizing the same way."
    ),
    "TRANSPOSE_CONV": "Conv2DTranspose(use_bias=True) converts with a bias input (version 3): use use_bias=False "
    "followed by a bias Add, or UpSampling (raw nearest resize) + Conv2D.",
    "CONV_2D": "Version 4+ comes from hybrid (float) or grouped convolution: convert full int8 and use groups=1.",
}
_ACTIVATION_FIX = (
    "Replace the activation with ReLU6 (edgeport `--edgetpu-compat` does this for gelu/hard_swish, then "
    "re-exports; fine-tune a few epochs to recover accuracy)."
)
_OP_FIXES = {
    "LEAKY_RELU": "Use ReLU or ReLU6 (or PReLU, which is on the Edge TPU list) instead of LeakyReLU.",
    "ELU": "Use ReLU or ReLU6 instead of ELU.",
    "EXP": "Move the exponential (softmax-like or decoding step) to the host after inference.",
}
_LIMITATION_FIXES = {
    "softmax_limit": "Remove the final Softmax from the model and apply it on the host (an argmax needs none).",
    "mean_axes": "Reduce over height/width only (GlobalAveragePooling2D), or move the reduction to the host.",
    "pad_axes": "Pad height/width only (ZeroPadding2D); pad channels with a 1x1 Conv2D instead.",
    "strided_slice": "Use stride-1 slices (Cropping2D) and downsample with a strided Conv2D or pooling instead.",
    "resize_rank": "Resize 4-D NHWC tensors with batch 1 only.",
    "fused_activation": "Apply the activation as a separate layer after the pooling/concatenation.",
    "concat_constant": "Concatenate activations only (or a zero padding of exactly 2 inputs).",
    "fully_connected_output": "Flatten to 2-D (batch, features) before the Dense layer.",
    "squeeze_relayout": "Squeeze leading 1s only, or use Reshape.",
    "too_many_dims": "Reshape so at most the 3 innermost dimensions are larger than 1.",
    "dynamic_shape": "Export with a static input signature (batch 1, fixed height/width).",
    "unsupported_dtype": "Convert full int8 (all ops int8; int8 or uint8 I/O): find the layer that stays float.",
}


@dataclass(frozen=True)
class Fix:
    """One thing to change, the op and Keras layer it concerns, and whether edgeport can do it itself."""

    op: str
    op_index: int | None
    layer: str | None
    layer_class: str | None
    remedy: str
    automatic: str | None = None  # the edgeport option that applies it, when there is one

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "op_index": self.op_index,
            "layer": self.layer,
            "layer_class": self.layer_class,
            "remedy": self.remedy,
            "automatic": self.automatic,
        }

    def render(self) -> str:
        where = (
            f" (layer '{self.layer}'" + (f", {self.layer_class})" if self.layer_class else ")") if self.layer else ""
        )
        return f"{self.op} at op {self.op_index}{where}: {self.remedy}"


def remedy_for_placement(graph: TFLiteGraph, placement: OpPlacement) -> tuple[str, str | None]:
    """The remedy for one unmapped op, and the edgeport option that applies it (if any)."""
    layer_class = graph.keras_layers.get(placement.layer, "") if placement.layer else ""
    if placement.boundary:
        return _IO_FIX, "--io-dtype int8"
    if placement.code == "op_version":
        return _VERSION_FIXES.get(placement.name, _VERSION_GENERIC.format(float_target="android-arm64")), None
    if placement.name in ("GELU", "HARD_SWISH"):
        return _ACTIVATION_FIX, "--edgetpu-compat"
    if placement.name in _OP_FIXES:
        return _OP_FIXES[placement.name], None
    if layer_class in LAYER_REMEDIES:
        return LAYER_REMEDIES[layer_class], None
    if placement.code in _LIMITATION_FIXES:
        return _LIMITATION_FIXES[placement.code], None
    if placement.name in OP_REMEDIES:
        return OP_REMEDIES[placement.name], None
    return (
        f"Replace the layer that makes {placement.name} with layers made of Edge TPU ops "
        "(`edgeport targets show edgetpu` lists them), or move it to the host after inference.",
        None,
    )


def fixes_for(graph: TFLiteGraph, analysis: EdgeTpuAnalysis) -> list[Fix]:
    """Remedies for the float I/O conversions and for the first CPU op (the one that ends the Edge TPU part)."""
    chosen = [p for p in analysis.ops if p.boundary]
    if analysis.first_cpu is not None:
        chosen.append(analysis.first_cpu)
    fixes: list[Fix] = []
    seen: set[str] = set()
    for p in sorted(chosen, key=lambda p: p.index):
        remedy, automatic = remedy_for_placement(graph, p)
        if p.boundary and remedy in seen:
            continue
        seen.add(remedy)
        layer_class = graph.keras_layers.get(p.layer) if p.layer else None
        fixes.append(Fix(p.name, p.index, p.layer, layer_class, remedy, automatic))
    return fixes


# --- the --edgetpu-compat rewrite ---------------------------------------------------------------------------


def _activation_name(value: Any) -> str | None:
    name = getattr(value, "__name__", None) if callable(value) else value
    if isinstance(value, dict):  # a serialized activation
        name = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
    return str(name).lower() if name else None


def edgetpu_compat_fixes(keras_model: Any, *, replace: Iterable[str] = UNMAPPED_ACTIVATIONS) -> tuple[Any, list[str]]:
    """A copy of ``keras_model`` whose activations the Edge TPU cannot map are ReLU6, and what changed.

    Replaces ``activation=`` arguments and ``Activation`` layers named in ``replace`` (default: gelu,
    hard_silu/hard_swish -- they convert to GELU/HARD_SWISH ops, which the Edge TPU does not map; pass
    ``replace=(*UNMAPPED_ACTIVATIONS, *SWISH_ACTIVATIONS)`` to replace swish too, although its
    LOGISTIC+MUL maps). Weights are copied unchanged; the accuracy change is the user's to measure.
    Works for Sequential and Functional models (``keras.models.clone_model``).
    """
    import keras

    from ...errors import NotSupportedError

    targets = {name.lower() for name in replace}
    changes: list[str] = []

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        current = _activation_name(getattr(layer, "activation", None) or config.get("activation"))
        if current in targets and "activation" in config:
            config["activation"] = "relu6"
            changes.append(f"layer '{layer.name}' ({type(layer).__name__}): activation {current} -> relu6")
        return type(layer).from_config(config)

    if not isinstance(keras_model, keras.Model) or not (
        isinstance(keras_model, keras.Sequential)
        or getattr(keras_model, "_is_graph_network", False)
        or type(keras_model).__name__ == "Functional"
    ):
        raise NotSupportedError(
            f"--edgetpu-compat rewrites Sequential and Functional Keras models; received a subclassed "
            f"{type(keras_model).__name__}.",
            hint="Change activation='gelu'/'hard_swish' to 'relu6' in the model's code and re-export.",
        )
    new_model = keras.models.clone_model(keras_model, clone_function=clone)
    new_model.set_weights(keras_model.get_weights())
    return new_model, changes
