"""The model zoo: the architectures people ship, built once for benchmarks/zoo.py and tests/test_zoo.py.

Each entry builds a Keras model with random weights (keras.applications with ``weights=None``, small
inputs, few classes) or one of the layer patterns the converter meets in practice (attention,
recurrent layers unrolled or not, Conv1D audio, a U-Net's up-sampling, several inputs and outputs,
preprocessing layers inside the model).

Random weights are not a realistic model: BatchNormalization keeps its initial statistics (mean 0,
variance 1) whatever the data, so activations grow or vanish layer after layer, and a classifier's
logits end in a range so narrow (measured 7.8e-09 on a random MobileNetV2-0.35) that TFLite Micro's
int8 softmax aborts. :func:`make_realistic` makes them non-degenerate without any training: every
BatchNormalization's moving statistics are set from the calibration data (one forward pass in
training mode with momentum 0, so each layer sees the already-normalized output of the ones before
it), Normalization layers are adapted to the data, and every Dense layer that produces a model output
is rescaled so its pre-activation logits have zero mean and unit variance on that data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Classes of every classifier in the zoo ("few classes": TFLite Micro's int8 softmax aborts above ~570).
CLASSES = 10


@dataclass(frozen=True)
class ZooEntry:
    """One zoo architecture: how to build it and what its inputs look like."""

    name: str
    #: "keras.applications" or "built" (a layer pattern assembled here).
    kind: str
    build: Callable[[Any], Any]
    #: Input name -> (shape without batch, (low, high)) of the seeded uniform calibration data.
    inputs: dict[str, tuple[tuple[int, ...], tuple[float, float]]]
    #: What is in it, for the results table.
    what: str
    #: Samples for the BatchNormalization statistics (fewer for 224x224: the training-mode pass holds them all).
    stat_samples: int = 64


def _app(cls_name: str, size: int, classes: int = CLASSES, **kwargs: Any) -> Callable[[Any], Any]:
    def build(keras: Any) -> Any:
        cls = getattr(keras.applications, cls_name)
        return cls(weights=None, input_shape=(size, size, 3), classes=classes, **kwargs)

    return build


def vit_tiny(keras: Any, size: int = 32, patch: int = 4, dim: int = 64, depth: int = 2, heads: int = 4) -> Any:
    """A ViT-tiny: conv patch embedding, a depthwise-conv positional encoding, pre-norm attention blocks.

    The positional encoding is a 3x3 depthwise convolution over the patch grid (conditional positional
    encoding), because a learned position table needs a custom layer that a .keras file cannot carry
    without its code.
    """
    layers = keras.layers
    image = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(image)
    x = layers.Add(name="pos_add")([x, layers.DepthwiseConv2D(3, padding="same", name="pos_conv")(x)])
    grid = size // patch
    x = layers.Reshape((grid * grid, dim), name="tokens")(x)
    for i in range(depth):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln1")(x)
        h = layers.MultiHeadAttention(heads, dim // heads, name=f"block{i}_mha")(h, h)
        x = layers.Add(name=f"block{i}_add1")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln2")(x)
        h = layers.Dense(dim * 2, activation="gelu", name=f"block{i}_mlp1")(h)
        h = layers.Dense(dim, name=f"block{i}_mlp2")(h)
        x = layers.Add(name=f"block{i}_add2")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    out = layers.Dense(CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(image, out, name="vit_tiny")


def recurrent(keras: Any, cell: str, unroll: bool, steps: int = 20, features: int = 8) -> Any:
    """A sensor/keyword sequence classifier: one GRU or LSTM layer, then a softmax classifier."""
    layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[cell]
    seq = keras.Input((steps, features), name="sequence")
    x = layer(32, unroll=unroll, name=cell)(seq)
    out = keras.layers.Dense(CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(seq, out, name=f"{cell}_unroll_{str(unroll).lower()}")


def conv1d_audio(keras: Any, samples: int = 4000) -> Any:
    """A raw-waveform keyword spotter (a quarter second at 16 kHz): strided Conv1D, BN, pooling, 12 words."""
    layers = keras.layers
    wave = keras.Input((samples, 1), name="waveform")
    x = wave
    for i, (filters, stride) in enumerate(((16, 4), (32, 2), (32, 2), (64, 2))):
        x = layers.Conv1D(filters, 9, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        x = layers.MaxPooling1D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    out = layers.Dense(12, activation="softmax", name="classifier")(x)
    return keras.Model(wave, out, name="conv1d_audio")


def unet(keras: Any, size: int = 64) -> Any:
    """A small U-Net: three up-sampling paths, Conv2DTranspose, bilinear and nearest UpSampling2D."""
    layers = keras.layers

    def block(x: Any, filters: int, name: str) -> Any:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    image = keras.Input((size, size, 3), name="image")
    e1 = block(image, 8, "enc1")
    e2 = block(layers.MaxPooling2D(name="down1")(e1), 16, "enc2")
    e3 = block(layers.MaxPooling2D(name="down2")(e2), 32, "enc3")
    b = block(layers.MaxPooling2D(name="down3")(e3), 32, "bottleneck")
    u3 = layers.Conv2DTranspose(32, 2, strides=2, name="up3_transpose")(b)
    d3 = block(layers.Concatenate(name="skip3")([u3, e3]), 32, "dec3")
    u2 = layers.UpSampling2D(interpolation="bilinear", name="up2_bilinear")(d3)
    d2 = block(layers.Concatenate(name="skip2")([u2, e2]), 16, "dec2")
    u1 = layers.UpSampling2D(interpolation="nearest", name="up1_nearest")(d2)
    d1 = block(layers.Concatenate(name="skip1")([u1, e1]), 8, "dec1")
    mask = layers.Conv2D(3, 1, activation="softmax", name="mask")(d1)
    return keras.Model(image, mask, name="unet")


def multi_io(keras: Any) -> Any:
    """Two inputs (an image and a metadata vector), two outputs (class probabilities and a score)."""
    layers = keras.layers
    image = keras.Input((32, 32, 3), name="image")
    meta = keras.Input((8,), name="meta")
    x = layers.Conv2D(16, 3, strides=2, activation="relu", name="conv1")(image)
    x = layers.Conv2D(32, 3, strides=2, activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    m = layers.Dense(16, activation="relu", name="meta_dense")(meta)
    h = layers.Concatenate(name="merge")([x, m])
    h = layers.Dense(32, activation="relu", name="shared")(h)
    cls = layers.Dense(5, activation="softmax", name="label")(h)
    score = layers.Dense(1, name="score")(h)
    return keras.Model({"image": image, "meta": meta}, {"label": cls, "score": score}, name="multi_io")


def preprocessing_inside(keras: Any) -> Any:
    """Rescaling(1/255) then Normalization (adapted to the data by make_realistic) inside a small CNN."""
    layers = keras.layers
    image = keras.Input((32, 32, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(image)
    x = layers.Normalization(axis=-1, name="normalize")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(image, out, name="preprocessing_inside")


_IMG_SIGNED = (-1.0, 1.0)  # MobileNet-style preprocessing, done outside the model
_IMG_PIXELS = (0.0, 255.0)  # models that carry their own Rescaling/Normalization (include_preprocessing)


def _img(size: int, rng: tuple[float, float]) -> dict[str, tuple[tuple[int, ...], tuple[float, float]]]:
    return {"image": ((size, size, 3), rng)}


#: Every zoo entry, in table order.
ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("MobileNet", "keras.applications", _app("MobileNet", 96), _img(96, _IMG_SIGNED), "96x96, alpha 1.0"),
        ZooEntry(
            "MobileNetV2", "keras.applications", _app("MobileNetV2", 96), _img(96, _IMG_SIGNED), "96x96, alpha 1.0"
        ),
        ZooEntry(
            "MobileNetV3Small",
            "keras.applications",
            _app("MobileNetV3Small", 96),
            _img(96, _IMG_PIXELS),
            "96x96, hard-swish, Rescaling inside",
        ),
        ZooEntry(
            "MobileNetV3Large",
            "keras.applications",
            _app("MobileNetV3Large", 96),
            _img(96, _IMG_PIXELS),
            "96x96, hard-swish, Rescaling inside",
        ),
        ZooEntry(
            "EfficientNetB0",
            "keras.applications",
            _app("EfficientNetB0", 96),
            _img(96, _IMG_PIXELS),
            "96x96, swish, Rescaling + Normalization inside",
        ),
        ZooEntry(
            "EfficientNetV2B0",
            "keras.applications",
            _app("EfficientNetV2B0", 96),
            _img(96, _IMG_PIXELS),
            "96x96, Rescaling + Normalization inside",
        ),
        ZooEntry("ResNet50", "keras.applications", _app("ResNet50", 96), _img(96, _IMG_SIGNED), "96x96"),
        ZooEntry("DenseNet121", "keras.applications", _app("DenseNet121", 96), _img(96, _IMG_SIGNED), "96x96"),
        ZooEntry("NASNetMobile", "keras.applications", _app("NASNetMobile", 96), _img(96, _IMG_SIGNED), "96x96"),
        ZooEntry(
            "ConvNeXtTiny",
            "keras.applications",
            _app("ConvNeXtTiny", 96),
            _img(96, _IMG_PIXELS),
            "96x96, LayerNormalization, GELU, Normalization inside",
        ),
        ZooEntry(
            "MobileNetV2-224",
            "keras.applications",
            _app("MobileNetV2", 224, classes=1000),
            _img(224, _IMG_SIGNED),
            "224x224, alpha 1.0, 1000 classes (real size)",
            16,
        ),
        ZooEntry(
            "ResNet50-224",
            "keras.applications",
            _app("ResNet50", 224, classes=1000),
            _img(224, _IMG_SIGNED),
            "224x224, 1000 classes (real size)",
            16,
        ),
        ZooEntry(
            "ViT-tiny", "built", vit_tiny, _img(32, (0.0, 1.0)), "32x32, 4x4 patches, MultiHeadAttention, LayerNorm"
        ),
        ZooEntry(
            "GRU-unrolled", "built", lambda k: recurrent(k, "gru", True), {"sequence": ((20, 8), (-1, 1))}, "20x8"
        ),
        ZooEntry("GRU", "built", lambda k: recurrent(k, "gru", False), {"sequence": ((20, 8), (-1, 1))}, "20x8"),
        ZooEntry(
            "LSTM-unrolled", "built", lambda k: recurrent(k, "lstm", True), {"sequence": ((20, 8), (-1, 1))}, "20x8"
        ),
        ZooEntry("LSTM", "built", lambda k: recurrent(k, "lstm", False), {"sequence": ((20, 8), (-1, 1))}, "20x8"),
        ZooEntry("Conv1D-audio", "built", conv1d_audio, {"waveform": ((4000, 1), (-1, 1))}, "4000 samples, 12 words"),
        ZooEntry("U-Net", "built", unet, _img(64, (0.0, 1.0)), "64x64, Conv2DTranspose, bilinear + nearest upsampling"),
        ZooEntry(
            "multi-input-output",
            "built",
            multi_io,
            {"image": ((32, 32, 3), (0.0, 1.0)), "meta": ((8,), (-1.0, 1.0))},
            "inputs image + meta, outputs label + score",
        ),
        ZooEntry(
            "Normalization+Rescaling",
            "built",
            preprocessing_inside,
            _img(32, _IMG_PIXELS),
            "Rescaling and Normalization layers inside",
        ),
    )
}


#: Small variants for tests/test_zoo.py (seconds each); not part of the benchmark's table.
FAST: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            "MobileNetV2-0.35-32",
            "keras.applications",
            _app("MobileNetV2", 32, alpha=0.35),
            _img(32, _IMG_SIGNED),
            "32x32, alpha 0.35",
        ),
    )
}


def entry(name: str) -> ZooEntry:
    """A zoo entry by name, fast test variants included."""
    return ZOO[name] if name in ZOO else FAST[name]


def sample_inputs(entry: ZooEntry, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded uniform data for each input, in the range the model expects (float32)."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.uniform(low, high, (n, *shape)).astype("float32")
        for name, (shape, (low, high)) in entry.inputs.items()
    }


def _model_inputs(model: Any, data: dict[str, np.ndarray]) -> Any:
    """``data`` in the structure ``model`` takes: the array for one input, else the dict by input name."""
    return next(iter(data.values())) if len(model.inputs) == 1 else data


def make_realistic(model: Any, data: dict[str, np.ndarray], keras: Any) -> list[str]:
    """Turn random weights into a model with non-degenerate activation ranges; returns what was done.

    No training: BatchNormalization statistics come from the data, Normalization layers are adapted
    to their own input (those built with a fixed mean and variance keep them), and each output
    Dense/Conv is rescaled so its logits, centred per class, have unit variance.
    """
    done: list[str] = []
    x = _model_inputs(model, data)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization) and getattr(layer, "input_mean", None) is None:
            feed = keras.Model(model.inputs, layer.input)
            layer.adapt(np.asarray(feed.predict(x, verbose=0)))
            done.append(f"adapted {layer.name}")
    bns = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if bns:
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.momentum = 0.0
        model(x, training=True)
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        done.append(f"{len(bns)} BatchNormalization statistics from data")
    for head in _output_heads(model, keras):
        activation, head.activation = head.activation, keras.activations.linear
        try:
            logits = np.asarray(keras.Model(model.inputs, head.output).predict(x, verbose=0))
        finally:
            head.activation = activation
        logits = logits.reshape(-1, logits.shape[-1])
        mean = logits.mean(axis=0)
        std = float((logits - mean).std()) or 1.0
        weights = [np.asarray(w) for w in head.get_weights()]
        weights[0] = weights[0] / std
        if len(weights) > 1:
            weights[1] = (weights[1] - mean) / std
        head.set_weights(weights)
        done.append(f"{head.name} logits rescaled to unit variance (std was {std:.3g})")
    return done


def _all_layers(model: Any) -> list[Any]:
    """Layers in call order, those of nested models (ConvNeXt's Sequential stem and blocks) included."""
    out: list[Any] = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers") and layer is not model:
            out.extend(_all_layers(layer))
    return out


def _output_heads(model: Any, keras: Any) -> list[Any]:
    """The Dense or Conv layer that computes each output's logits, found through Activation, Softmax,
    Flatten, Reshape and Dropout layers (keras.applications' MobileNet and MobileNetV3 end in a 1x1 conv).
    """
    passthrough = (
        keras.layers.Activation,
        keras.layers.Softmax,
        keras.layers.Flatten,
        keras.layers.Reshape,
        keras.layers.Dropout,
    )
    found = []
    for tensor in model.outputs:
        op = tensor._keras_history.operation
        while isinstance(op, passthrough):
            op = op.input._keras_history.operation
        if isinstance(op, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)) and op not in found:
            found.append(op)
    return found


def build(name: str, keras: Any, *, seed: int = 0, samples: int = 64) -> tuple[Any, dict[str, np.ndarray], list[str]]:
    """The zoo model ``name``, made non-degenerate on ``samples`` seeded inputs, and those inputs."""
    spec = entry(name)
    keras.utils.set_random_seed(seed)
    model = spec.build(keras)
    data = sample_inputs(spec, samples, seed=seed)
    done = make_realistic(model, data, keras)
    return model, data, done


def save(name: str, folder: Path, keras: Any, *, calib_samples: int = 100, seed: int = 0) -> dict[str, Any]:
    """Build ``name``, save ``model.keras`` and the calibration data (.npy for one input, .npz by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    model, _, done = build(name, keras, seed=seed, samples=entry(name).stat_samples)
    model_path = folder / "model.keras"
    model.save(model_path)
    calib = sample_inputs(entry(name), calib_samples, seed=seed + 1)
    if len(calib) == 1:
        calib_path = folder / "calib.npy"
        np.save(calib_path, next(iter(calib.values())))
    else:
        calib_path = folder / "calib.npz"
        np.savez(calib_path, **calib)
    return {
        "model": str(model_path),
        "calib": str(calib_path),
        "params": int(model.count_params()),
        "realistic": done,
    }
