"""Quantization-aware training for Keras 3 models, ending in a full-integer TFLite file.

The model is rebuilt as the int8 kernels will compute it (:mod:`exporter.compress.qat_layers`):
BatchNormalization folded into the Conv2D / DepthwiseConv2D / Dense before it (as the converter folds
it), ReLU / ReLU6 fused into the op they follow, weights rounded to int8 per output channel (or per
tensor), and an int8 fake quantizer on every tensor the converter keeps with its own range: the model
input, each op's output after its fused activation, additions, global pooling, concatenations (one
range shared by a concatenation's inputs and output, as int8 CONCATENATION requires). Ops the int8
kernels run at their input's scale (max pooling, reshape, padding, dropout) get none; softmax, sigmoid
and tanh keep the fixed output ranges the converter gives them. The ranges start from the calibration
data and follow the training batches as moving averages; the converter reads them as the tensors' ranges,
so the trained ranges are the int8 model's (:func:`exporter.steps.qat.check_qat_outputs` measures that they are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from .qat_graph import WEIGHTED, QatGraph, as_functional
from .qat_hold import held_structure


@dataclass(frozen=True)
class QatSpec:
    """How to train: epochs over --train, and the weight scheme the target's converter will use."""

    epochs: int = 2
    batch_size: int = 64
    #: None: 1e-4 against labels, 1e-5 when matching the float model's outputs (measured on MLPerf AD:
    #: 1e-4 drove its output error from 0.60 to 0.93, 1e-5 to 0.43 in 20 epochs).
    learning_rate: float | None = None
    #: Every weight per tensor (--per-tensor); else per output channel.
    per_tensor: bool = False
    #: Dense weights per tensor (an MCU target's per-tensor Dense; --dense-quant per-tensor).
    dense_per_tensor: bool = False
    calib_samples: int = 256
    seed: int = 0


@dataclass
class QatReport:
    """What the rebuild did and what training bought, on the evaluation data when given."""

    spec: QatSpec
    quantized_layers: list[str] = field(default_factory=list)
    folded: dict[str, str] = field(default_factory=dict)
    fused: dict[str, str] = field(default_factory=dict)
    quantizers: int = 0
    #: Layers whose shared values (clustering) or exact zeros (pruning) training kept, and how.
    held: dict[str, str] = field(default_factory=dict)
    float_accuracy: float | None = None
    before_training_accuracy: float | None = None
    qat_accuracy: float | None = None
    final_loss: float | None = None
    #: What training fitted: the labels, or (no labels given) the float model's outputs.
    target: str = "the labels (cross-entropy)"

    def summary(self) -> str:
        scheme = "per-tensor" if self.spec.per_tensor else "per-channel"
        if self.spec.dense_per_tensor and not self.spec.per_tensor:
            scheme += " (Dense per-tensor)"
        parts = [
            f"QAT: {len(self.quantized_layers)} layers with int8 weights ({scheme}), {self.quantizers} activation "
            f"quantizers, {len(self.folded)} BatchNormalization folded, {len(self.fused)} activations fused; "
            f"{self.spec.epochs} epochs"
        ]
        if self.held:
            kinds = sorted(set(self.held.values()))
            parts.append(f"{len(self.held)} layers kept their {' and '.join(kinds)}")
        if self.qat_accuracy is not None:
            acc = f"fake-quantized accuracy {self.before_training_accuracy:.2%} before training, {self.qat_accuracy:.2%} after"
            if self.float_accuracy is not None:
                acc += f" (float {self.float_accuracy:.2%})"
            parts.append(acc)
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.__dict__,
            "quantized_layers": self.quantized_layers,
            "folded": self.folded,
            "fused": self.fused,
            "quantizers": self.quantizers,
            "held": self.held,
            "float_accuracy": self.float_accuracy,
            "before_training_accuracy": self.before_training_accuracy,
            "qat_accuracy": self.qat_accuracy,
            "final_loss": self.final_loss,
            "target": self.target,
        }


def quantization_aware_training(
    model: Any,
    train: tuple[np.ndarray, np.ndarray | None],
    spec: QatSpec | None = None,
    *,
    eval: tuple[np.ndarray, np.ndarray] | None = None,  # noqa: A002 - the CLI's name
    verbose: bool = False,
) -> tuple[Any, QatReport]:
    """A new model, fake-quantized as the int8 kernels compute, trained on ``train``; ``model`` is untouched.

    ``train`` is (inputs, class labels) for a classifier, or (inputs, None) for any model: it then learns
    to reproduce the float model's own outputs (mean squared error), which needs no labels (an
    autoencoder, a regressor). Raises :class:`UsageError` naming the first layer it cannot fake-quantize."""
    from .finetune import accuracy, fine_tune

    spec = spec or QatSpec()
    x, y = train
    qat, report = prepare_qat(model, x[: spec.calib_samples], spec)
    if eval is not None:
        report.float_accuracy = accuracy(model, *eval)
        report.before_training_accuracy = accuracy(qat, *eval)
    held = held_structure(qat, report)
    callbacks = [held] if held is not None else None
    if y is None:
        report.final_loss = _match_float(qat, model, x, spec, callbacks, verbose)
        report.target = "the float model's outputs (mean squared error; no labels)"
    else:
        report.final_loss = fine_tune(
            qat, x, y, epochs=spec.epochs, batch_size=spec.batch_size, learning_rate=spec.learning_rate or 1e-4,
            verbose=verbose, seed=spec.seed, callbacks=callbacks,
        )  # fmt: skip
    if held is not None:
        held.on_train_batch_end(0)
    if eval is not None:
        report.qat_accuracy = accuracy(qat, *eval)
    return qat, report


def _match_float(qat: Any, model: Any, x: np.ndarray, spec: QatSpec, callbacks: list | None, verbose: bool) -> float:
    """Train ``qat`` to output what the float ``model`` outputs on ``x``; the last epoch's loss."""
    import keras

    from .finetune import _predict

    keras.utils.set_random_seed(spec.seed)
    targets = _predict(model, x)
    qat.compile(optimizer=keras.optimizers.Adam(spec.learning_rate or 1e-5), loss="mse")
    history = qat.fit(
        x, targets, epochs=spec.epochs, batch_size=spec.batch_size, shuffle=True, verbose=1 if verbose else 0,
        callbacks=callbacks or [],
    )  # fmt: skip
    return float((history.history.get("loss") or [float("nan")])[-1])


def prepare_qat(model: Any, calib: np.ndarray, spec: QatSpec | None = None) -> tuple[Any, QatReport]:
    """The fake-quantized rebuild of ``model`` with its ranges calibrated on ``calib`` (not trained yet)."""
    import keras

    from .qat_layers import QUANTIZED, ActivationQuantizer

    spec = spec or QatSpec()
    graph = QatGraph(as_functional(model))
    report = QatReport(spec)
    folds, absorbed = graph.plan(report)
    shared = graph.concat_quantizers()
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=_input_name(t)) for t in graph.model.inputs]
    quantized_inputs = {id(t): ActivationQuantizer(name=f"{_input_name(t)}_quant")(t) for t in inputs}
    originals = {layer.name: layer for layer in graph.model.layers}

    def clone(layer: Any) -> Any:
        kind = type(layer).__name__
        if kind in QUANTIZED:
            config = layer.get_config()
            if layer.name in folds:
                config["use_bias"] = True
            if layer.name in absorbed:
                config["activation"] = absorbed[layer.name]
            if layer.name in graph.split:
                config["activation"] = "linear"
            per_channel = not (spec.per_tensor or (kind == "Dense" and spec.dense_per_tensor))
            return QUANTIZED[kind](config, per_channel=per_channel)
        return layer.__class__.from_config(layer.get_config())

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_swap_inputs(a, quantized_inputs) for a in args)
        original = originals[layer.name]
        if layer.name in graph.skipped:  # folded BatchNormalization, or an activation fused into its producer
            return args[0]
        out = layer(*args, **kwargs)
        if not graph.needs_quantizer(original):
            return out
        quantizer = shared.get(layer.name) or ActivationQuantizer(name=f"{layer.name}_quant")
        out = quantizer(out)
        if layer.name in graph.split:
            out = keras.layers.Activation(graph.split[layer.name], name=f"{layer.name}_{graph.split[layer.name]}")(out)
        return out

    structure = inputs if isinstance(graph.model.input, (list, tuple)) else inputs[0]
    new = keras.models.clone_model(graph.model, input_tensors=structure, clone_function=clone, call_function=call)
    _copy_weights(graph.model, new, folds)
    report.quantized_layers = [layer.name for layer in new.layers if type(layer).__name__ in _QUANTIZED_NAMES]
    quantizers = [layer for layer in new.layers if isinstance(layer, ActivationQuantizer)]
    report.quantizers = len(quantizers)
    _calibrate(new, quantizers, np.asarray(calib, dtype=np.float32))
    return new, report


_QUANTIZED_NAMES = {"QuantizedConv2D", "QuantizedDepthwiseConv2D", "QuantizedDense"}


def is_qat_model(model: Any) -> bool:
    """Was ``model`` written by :func:`quantization_aware_training` (it holds edgeport's quantizers)?"""
    return any(type(layer).__name__ == "ActivationQuantizer" for layer in getattr(model, "layers", []) or [])


def _input_name(tensor: Any) -> str:
    name = getattr(tensor, "name", None) or "input"
    return str(name).split(":")[0]


def _swap_inputs(value: Any, quantized: dict[int, Any]) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_swap_inputs(v, quantized) for v in value)
    return quantized.get(id(value), value)


def _copy_weights(old: Any, new: Any, folds: dict[str, Any]) -> None:
    """Every layer's weights by name; a folded layer gets its kernel and bias with the BatchNormalization in."""
    by_name = {layer.name: layer for layer in new.layers}
    for layer in old.layers:
        target = by_name.get(layer.name)
        if target is None or not layer.weights:
            continue
        if type(layer).__name__ in WEIGHTED:
            kernel = layer.kernel.numpy()
            bias = (
                layer.bias.numpy()
                if getattr(layer, "use_bias", False)
                else np.zeros(kernel.shape[-1] * _multiplier(layer), np.float32)
            )
            if layer.name in folds:
                kernel, bias = _fold(layer, folds[layer.name], kernel, bias)
            target.inner.kernel.assign(kernel)
            target.inner.bias.assign(bias)
        else:
            target.set_weights(layer.get_weights())


def _multiplier(layer: Any) -> int:
    return int(layer.get_config().get("depth_multiplier", 1)) if type(layer).__name__ == "DepthwiseConv2D" else 1


def _fold(layer: Any, bn: Any, kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w * gamma / sqrt(var + eps) per output channel; b' = (b - mean) * that + beta (the converter's fold)."""
    config = bn.get_config()
    axis = config.get("axis", -1)
    if axis not in (-1, len(layer.output.shape) - 1, [-1], [len(layer.output.shape) - 1]):
        raise UsageError(
            f"QAT folds BatchNormalization over the channel axis only; '{bn.name}' normalizes axis {axis}."
        )
    weights = {w.path.split("/")[-1]: w.numpy() for w in bn.weights}
    channels = kernel.shape[-1] * _multiplier(layer)
    gamma = weights.get("gamma", np.ones(channels, np.float32))
    beta = weights.get("beta", np.zeros(channels, np.float32))
    factor = gamma / np.sqrt(weights["moving_variance"] + config.get("epsilon", 1e-3))
    new_bias = (bias - weights["moving_mean"]) * factor + beta
    if type(layer).__name__ == "DepthwiseConv2D":
        kernel = kernel * factor.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * factor
    return kernel.astype(np.float32), new_bias.astype(np.float32)


def _calibrate(model: Any, quantizers: list[Any], calib: np.ndarray, batch: int = 64) -> None:
    """Each quantizer's range: the min/max the calibration data reach there (post-training quantization's)."""
    if not len(calib):
        raise UsageError("QAT needs calibration samples to start its ranges from.", hint="Pass --train data.")
    for q in quantizers:
        q.observe = True
    try:
        for start in range(0, len(calib), batch):
            model(calib[start : start + batch], training=False)
    finally:
        for q in quantizers:
            q.observe = False
