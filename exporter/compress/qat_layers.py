"""The Keras layers of a quantization-aware model: int8 weights and int8 activations, simulated in float.

Why per-channel weights are not ``FakeQuant`` ops: the TFLite converter turns a per-channel
``FakeQuantWithMinMaxVarsPerChannel`` on a Dense kernel into a transpose with "mismatched quantized
axes" and fails (TF 2.21, measured). They are rounded here instead, per output channel to
``max|w| / 127`` steps with a straight-through gradient; the converter's own per-channel symmetric int8
quantization of such a kernel picks exactly that scale (max|w_q| = 127 steps), so the int8 file holds
the very weights that were trained. Per-tensor weights are a per-tensor ``FakeQuant`` op (same values),
which is what makes the converter keep one scale. Activations use ``keras.quantizers.fake_quant_with_min_max_vars``,
which the converter reads as the tensor's range: the trained ranges carry into the int8 model.

Registered for serialization under the ``edgeport`` package, so a saved QAT model loads with Keras'
``safe_mode`` on (no lambda, no custom code beyond these classes) in any process that imported edgeport.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

#: Steps of a symmetric int8 weight (TFLite's narrow range, -127..127).
_WEIGHT_STEPS = 127.0
#: Moving-average decay of activation ranges while training (TF Model Optimization's default).
EMA_DECAY = 0.999
#: Fused activations the int8 kernels apply before requantizing (the converter fuses these into the op).
FUSED = ("linear", "relu", "relu6")


def quantize_weights(kernel: Any, reduce_axes: tuple[int, ...] | None) -> Any:
    """``kernel`` rounded to symmetric int8 steps (per channel: max over ``reduce_axes``), straight-through."""
    magnitude = ops.max(ops.abs(kernel)) if reduce_axes is None else ops.max(ops.abs(kernel), axis=reduce_axes)
    scale = ops.maximum(magnitude, 1e-12) / _WEIGHT_STEPS
    steps = kernel / scale
    rounded = steps + ops.stop_gradient(ops.clip(ops.round(steps), -_WEIGHT_STEPS, _WEIGHT_STEPS) - steps)
    return rounded * scale


def _activation(x: Any, name: str) -> Any:
    if name == "relu":
        return ops.relu(x)
    if name == "relu6":
        return ops.relu6(x)
    return x


@keras.saving.register_keras_serializable(package="edgeport")
class ActivationQuantizer(keras.layers.Layer):
    """Per-tensor asymmetric int8 fake quantization of an activation, its range a moving average of the
    batches seen while training (or while ``observe`` is set, for the calibration pass before training).

    One instance may be called on several tensors (a concatenation's inputs and output): they then share
    one range, as TFLite's int8 CONCATENATION requires."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.observe = False

    def build(self, input_shape: Any) -> None:
        zeros = keras.initializers.Constant(0.0)
        self.range_min = self.add_weight(shape=(), initializer=zeros, trainable=False, name="range_min")
        self.range_max = self.add_weight(shape=(), initializer=zeros, trainable=False, name="range_max")
        self.seen = self.add_weight(shape=(), initializer=zeros, trainable=False, name="seen")

    def call(self, x: Any, training: bool | None = None) -> Any:
        if training or self.observe:
            low = ops.minimum(ops.min(x), 0.0)  # int8 ranges hold zero exactly
            high = ops.maximum(ops.max(x), 0.0)
            first = ops.cast(self.seen < 0.5, x.dtype)
            if self.observe:  # calibration: the envelope of what the data reach, as post-training min/max
                low_seen, high_seen = ops.minimum(self.range_min, low), ops.maximum(self.range_max, high)
            else:
                low_seen = EMA_DECAY * self.range_min + (1.0 - EMA_DECAY) * low
                high_seen = EMA_DECAY * self.range_max + (1.0 - EMA_DECAY) * high
            self.range_min.assign(first * low + (1.0 - first) * low_seen)
            self.range_max.assign(first * high + (1.0 - first) * high_seen)
            self.seen.assign(1.0)
        high = ops.maximum(self.range_max, self.range_min + 1e-6)
        return keras.quantizers.fake_quant_with_min_max_vars(x, self.range_min, high, num_bits=8)


class _QuantizedWeights(keras.layers.Layer):
    """A Conv2D / DepthwiseConv2D / Dense whose kernel is int8 on every forward pass, with its fused activation."""

    def __init__(self, config: dict[str, Any], per_channel: bool = True, **kwargs: Any) -> None:
        super().__init__(name=config.get("name"), **kwargs)
        self.layer_config = dict(config)
        self.per_channel = bool(per_channel)
        self.fused = config.get("activation") or "linear"
        if self.fused not in FUSED:
            raise ValueError(f"activation {self.fused!r} is not one TFLite fuses")
        inner = dict(config, activation="linear", name=f"{config.get('name')}_float")
        self.inner = self._inner_class().from_config(inner)

    def _inner_class(self) -> type:
        raise NotImplementedError

    def _reduce_axes(self, rank: int) -> tuple[int, ...] | None:
        raise NotImplementedError

    def _apply(self, x: Any, kernel: Any) -> Any:
        raise NotImplementedError

    def call(self, x: Any) -> Any:
        y = self._apply(x, self.quantized_kernel())
        if self.inner.use_bias:
            y = y + self.inner.bias
        return _activation(y, self.fused)

    def build(self, input_shape: Any) -> None:
        self.inner.build(input_shape)

    @property
    def kernel(self) -> Any:
        """The float kernel (what exporter.compress.cluster.is_clustered and the QAT holds read)."""
        return self.inner.kernel

    def quantized_kernel(self) -> Any:
        kernel = self.inner.kernel
        if self.per_channel:
            return quantize_weights(kernel, self._reduce_axes(len(kernel.shape)))
        # Per tensor: a FakeQuant op, so the converter keeps one scale (without it, a model holding any
        # FakeQuant op gets per-channel weights whatever --per-tensor asks; measured). Same values:
        # narrow range over [-max|w|, max|w|] is 254 steps of max|w| / 127, zero exactly representable.
        magnitude = ops.maximum(ops.max(ops.abs(kernel)), 1e-12)
        return keras.quantizers.fake_quant_with_min_max_vars(
            kernel, -magnitude, magnitude, num_bits=8, narrow_range=True
        )

    def get_config(self) -> dict[str, Any]:
        base = super().get_config()
        base.pop("name", None)
        return {**base, "config": self.layer_config, "per_channel": self.per_channel}

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.inner.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package="edgeport")
class QuantizedConv2D(_QuantizedWeights):
    def _inner_class(self) -> type:
        return keras.layers.Conv2D

    def _reduce_axes(self, rank: int) -> tuple[int, ...]:
        return (0, 1, 2)

    def _apply(self, x: Any, kernel: Any) -> Any:
        c = self.inner
        return ops.conv(x, kernel, c.strides, c.padding, c.data_format, c.dilation_rate)


@keras.saving.register_keras_serializable(package="edgeport")
class QuantizedDepthwiseConv2D(_QuantizedWeights):
    def _inner_class(self) -> type:
        return keras.layers.DepthwiseConv2D

    def _reduce_axes(self, rank: int) -> tuple[int, ...]:
        return (0, 1)  # one scale per (input channel, multiplier): TFLite's output channel

    def _apply(self, x: Any, kernel: Any) -> Any:
        c = self.inner
        return ops.depthwise_conv(x, kernel, c.strides, c.padding, c.data_format, c.dilation_rate)


@keras.saving.register_keras_serializable(package="edgeport")
class QuantizedDense(_QuantizedWeights):
    def _inner_class(self) -> type:
        return keras.layers.Dense

    def _reduce_axes(self, rank: int) -> tuple[int, ...]:
        return tuple(range(rank - 1))

    def _apply(self, x: Any, kernel: Any) -> Any:
        return ops.matmul(x, kernel)


QUANTIZED = {"Conv2D": QuantizedConv2D, "DepthwiseConv2D": QuantizedDepthwiseConv2D, "Dense": QuantizedDense}
