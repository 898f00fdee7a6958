"""The MNIST data splits and CNNs that tests and benchmarks train, defined once.

A number in benchmarks/*_results.md and the test that guards it must be about the same model and the
same data; both import this module (pytest puts scripts/ on the path; the benchmarks add it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Disjoint seeded fractions of the 10,000 real MNIST test images.
SPLITS = {"train": 0.6, "calib": 0.1, "eval": 0.3}


def split_mnist(images: np.ndarray, labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/calib/eval splits (seed 0), images scaled to 0..1 with a channel axis."""
    from exporter.calibrate import split_indices

    x = (images.astype("float32") / 255.0)[..., None]
    parts = split_indices(len(x), SPLITS, seed=0)
    return {name: (x[idx], labels[idx]) for name, idx in parts.items()}


def load_mnist_splits(assets: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`split_mnist` of ``assets/datasets/mnist_test`` (the shared assets folder)."""
    from exporter.calibrate import load_mnist_idx

    folder = Path(assets) / "datasets" / "mnist_test"
    return split_mnist(*load_mnist_idx(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"))


def two_conv_cnn(conv1: int, conv2: int, hidden: int) -> Any:
    """conv1 -> pool -> conv2 -> pool -> Dense(hidden) -> classifier 10, compiled, untrained.

    The widths are the knob: narrow with a wide Dense where clustering and low-rank matter, wide for a
    distillation teacher.
    """
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(conv1, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(conv2, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def wide_cnn() -> Any:
    """conv1 16, conv2 32 + BatchNorm, conv3 32, fc 64, classifier 10 (47,658 weights), compiled, untrained.

    Two middle convs and a hidden Dense, so the weights (not the flatbuffer) dominate the file, as in
    real models, and channel pruning has middle layers to cut.
    """
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(32, 3, name="conv2"),
            keras.layers.BatchNormalization(name="bn2"),
            keras.layers.ReLU(name="relu2"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv3"),
            keras.layers.MaxPooling2D(2, name="pool3"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="fc"),
            keras.layers.Dense(10, activation="softmax", name="classifier"),
        ],
        name="wide_cnn",
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
