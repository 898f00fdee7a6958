"""The functional graph of a model to fake-quantize, and the plan: what folds, fuses and gets a quantizer.

The rules are the TFLite converter's (exporter.compress.qat explains them); a layer none of them covers
is refused here, in one line that names it.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

#: Layers the int8 kernels run at their input's scale: no quantizer of their own.
SCALE_PRESERVING = {
    "MaxPooling2D", "MaxPooling1D", "AveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Reshape", "Dropout",
    "SpatialDropout2D", "ZeroPadding2D", "Cropping2D", "Permute", "InputLayer", "Identity",
}  # fmt: skip
#: Layers whose int8 output range the converter fixes (softmax, logistic, tanh): no quantizer either.
FIXED_RANGE_ACTIVATIONS = {"softmax", "sigmoid", "tanh"}
#: Weightless layers with an output range of their own: a quantizer after each.
OWN_RANGE = {"Add", "Subtract", "Multiply", "Concatenate", "GlobalAveragePooling2D", "Rescaling", "ReLU", "Activation"}
WEIGHTED = ("Conv2D", "DepthwiseConv2D", "Dense")
SUPPORTED = "Conv2D, DepthwiseConv2D, Dense, BatchNormalization (after one of those), pooling, add, concatenate"


class QatGraph:
    """The functional graph's producer/consumer links, and the plan: what folds, fuses and gets a quantizer."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.consumers: dict[str, list[Any]] = {layer.name: [] for layer in model.layers}
        self.producers: dict[str, list[Any]] = {layer.name: [] for layer in model.layers}
        calls: dict[str, int] = {}
        for nodes in model._nodes_by_depth.values():  # this model's own call nodes (a layer may have others)
            for node in nodes:
                layer = node.operation
                if layer.name not in self.consumers:  # the model's input nodes
                    continue
                calls[layer.name] = calls.get(layer.name, 0) + 1
                for parent in node.parent_nodes:
                    producer = parent.operation
                    if producer.name in self.consumers:
                        self.consumers[producer.name].append(layer)
                        self.producers[layer.name].append(producer)
        for name, count in calls.items():
            if count > 1:
                raise UsageError(
                    f"QAT cannot fake-quantize layer '{name}': it is called {count} times (a shared layer).",
                    hint="Give each call its own layer, or export without --qat.",
                )
        self.skipped: set[str] = set()
        #: Weighted layers whose softmax / sigmoid / tanh becomes its own op after the int8 output.
        self.split: dict[str, str] = {}

    def plan(self, report: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """BatchNormalization layers to fold (producer name -> BN layer), activations fused (producer -> name)."""
        folds: dict[str, Any] = {}
        absorbed: dict[str, str] = {}
        for layer in self.model.layers:
            kind = type(layer).__name__
            if kind == "BatchNormalization":
                producer = self._sole_producer(layer)
                if (
                    producer is None
                    or type(producer).__name__ not in WEIGHTED
                    or self.consumers[producer.name] != [layer]
                ):
                    raise UsageError(
                        f"QAT cannot fold BatchNormalization '{layer.name}': it does not directly follow a Conv2D, "
                        "DepthwiseConv2D or Dense whose only consumer it is.",
                        hint=f"QAT supports {SUPPORTED}; move the normalization or export without --qat.",
                    )
                if (producer.get_config().get("activation") or "linear") != "linear":
                    raise UsageError(
                        f"QAT cannot fold BatchNormalization '{layer.name}': '{producer.name}' applies its activation first.",
                        hint="Use activation=None on the layer before BatchNormalization and an activation layer after it.",
                    )
                folds[producer.name] = layer
                self.skipped.add(layer.name)
                report.folded[layer.name] = producer.name
            elif kind in WEIGHTED:
                activation = layer.get_config().get("activation") or "linear"
                if activation in FIXED_RANGE_ACTIVATIONS:  # Dense(softmax): int8 FC, then a SOFTMAX op
                    self.split[layer.name] = activation
                elif activation not in ("linear", "relu", "relu6"):
                    raise UsageError(
                        f"QAT cannot fake-quantize layer '{layer.name}' ({kind}): activation '{activation}' is not one "
                        "TFLite int8 fuses (linear, relu, relu6).",
                        hint="Put the activation in its own layer, or export without --qat.",
                    )
                if kind == "Conv2D" and layer.get_config().get("groups", 1) != 1:
                    raise UsageError(f"QAT cannot fake-quantize grouped convolution '{layer.name}'.", hint=SUPPORTED)
            elif layer.weights:
                raise UsageError(
                    f"QAT cannot fake-quantize layer '{layer.name}' ({kind}).",
                    hint=f"QAT supports {SUPPORTED}; export without --qat, or replace that layer.",
                )
            elif not self._known(layer):
                raise UsageError(
                    f"QAT has no int8 rule for layer '{layer.name}' ({kind}).",
                    hint=f"QAT supports {SUPPORTED}; export without --qat.",
                )
        for layer in self.model.layers:  # ReLU / ReLU6 after a weighted layer (through its folded BN) fuses into it
            fused = _relu_kind(layer)
            if fused is None:
                continue
            producer = self._sole_producer(layer)
            if producer is not None and producer.name in self.skipped:  # a folded BN: look through it
                producer = self._sole_producer(producer)
            if producer is None or type(producer).__name__ not in WEIGHTED:
                continue
            if (producer.get_config().get("activation") or "linear") != "linear":
                continue
            chain = self.consumers[producer.name]
            if len(chain) == 1 and (chain[0] is layer or self.consumers[chain[0].name] == [layer]):
                absorbed[producer.name] = fused
                self.skipped.add(layer.name)
                report.fused[layer.name] = producer.name
        return folds, absorbed

    def needs_quantizer(self, layer: Any) -> bool:
        kind = type(layer).__name__
        if kind in SCALE_PRESERVING or _fixed_range(layer):
            return False
        if layer.name in self.split:
            return True
        consumers = self.consumers[layer.name]
        if kind not in WEIGHTED and len(consumers) == 1 and _relu_kind(consumers[0]) is not None:
            return False  # ADD + ReLU: the converter fuses the activation, the range is the ReLU's
        return True

    def concat_quantizers(self) -> dict[str, Any]:
        """One quantizer per concatenation, shared with the producers of its inputs (one range for all)."""
        from .qat_layers import ActivationQuantizer

        shared: dict[str, Any] = {}
        for layer in self.model.layers:
            if type(layer).__name__ != "Concatenate":
                continue
            quantizer = ActivationQuantizer(name=f"{layer.name}_quant")
            shared[layer.name] = quantizer
            for producer in self.producers[layer.name]:
                if (
                    self.needs_quantizer(producer)
                    and producer.name not in shared
                    and len(self.consumers[producer.name]) == 1
                ):
                    shared[producer.name] = quantizer
        return shared

    def _sole_producer(self, layer: Any) -> Any:
        producers = self.producers[layer.name]
        return producers[0] if len(producers) == 1 else None

    def _known(self, layer: Any) -> bool:
        kind = type(layer).__name__
        if kind == "Activation":
            return (layer.get_config().get("activation") or "linear") in (
                "linear",
                "relu",
                "relu6",
                *FIXED_RANGE_ACTIVATIONS,
            )
        if kind == "ReLU":
            return _relu_kind(layer) is not None
        return kind in SCALE_PRESERVING or kind in OWN_RANGE or kind == "Softmax"


def _relu_kind(layer: Any) -> str | None:
    """'relu' or 'relu6' when ``layer`` is an activation layer TFLite can fuse, else None."""
    kind = type(layer).__name__
    config = layer.get_config()
    if kind == "Activation" and config.get("activation") in ("relu", "relu6"):
        return str(config["activation"])
    if kind == "ReLU" and not config.get("negative_slope") and not config.get("threshold"):
        limit = config.get("max_value")
        if limit is None:
            return "relu"
        if float(limit) == 6.0:
            return "relu6"
    return None


def _fixed_range(layer: Any) -> bool:
    kind = type(layer).__name__
    if kind == "Softmax":
        return True
    return kind == "Activation" and layer.get_config().get("activation") in FIXED_RANGE_ACTIVATIONS


def as_functional(model: Any) -> Any:
    """A functional view of ``model`` (Sequential models are called on an Input; the layers are shared)."""
    import keras

    if isinstance(model, keras.Sequential):
        inputs = keras.Input(shape=model.input_shape[1:], name="input")
        x = inputs
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inputs, x, name=model.name)
    if not hasattr(model, "_inbound_nodes") or not getattr(model, "inputs", None):
        raise UsageError(
            "QAT needs a functional or Sequential Keras model.", hint="Subclassed models are not supported."
        )
    return model
